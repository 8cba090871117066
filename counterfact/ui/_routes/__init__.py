"""The viewer's routes: one module per resource (runs, debug sessions, jobs, the audit and
import lists, suite runs), each an `APIRouter` over the page data the `ui` modules compute; the
shared state comes from `state.ViewerDep`. `ROUTERS` is in the order the app includes them (the
order of its OpenAPI paths)."""

from counterfact.ui._routes import debug, jobs, lists, runs, suites
from counterfact.ui._routes.state import Viewer, ViewerDep, get_viewer

ROUTERS = (runs.api, debug.api, jobs.router, runs.pages, debug.pages, lists.router, suites.router)

__all__ = ["ROUTERS", "Viewer", "ViewerDep", "get_viewer"]
