"""`python -m counterfact.cli`, as the tests and scripts run it."""

from counterfact.cli import main

main()
