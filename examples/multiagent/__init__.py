"""Four multi-agent LangGraph apps over the town questions, written the way their users write
them: a supervisor, a swarm, a supervisor of team supervisors, and hand-written handoffs on
`Command`. See README.md here."""
