"""Make the Langfuse export under tests/formats/data with the Langfuse SDK's own API models.

No Langfuse server runs here, so nothing records the trace: the observations of one support
team run (an agent root, a researcher agent with a generation and a tool call, a handoff event,
a writer agent with a generation) are built as the SDK's `ObservationV2` objects, in the
`ObservationsV2Response` that `Langfuse().api.observations.get_many(trace_id=...)` returns, and
saved as the SDK serializes them (camelCase JSON, as the API sends). The field names and
types are the SDK's; the values are this script's. Run with the SDK installed (`pip install
langfuse`, 5.x); the tests need no Langfuse.

    python tests/formats/data/make_langfuse.py
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from langfuse.api import ObservationsV2Response
from langfuse.api.commons.types.observation_v2 import ObservationV2
from langfuse.api.observations.types.observations_v2meta import ObservationsV2Meta

HERE = Path(__file__).parent
TRACE = "5f1b2c3d4e5f60718293a4b5c6d7e8f9"
START = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


def observation(id: str, type: str, name: str, start_ms: int, end_ms: int, parent: str | None, **fields: Any) -> ObservationV2:
    """One observation of the trace, timed from its start."""
    return ObservationV2(
        id=id, trace_id=TRACE, type=type, name=name, parent_observation_id=parent, is_root_observation=parent is None,
        start_time=START + timedelta(milliseconds=start_ms), end_time=START + timedelta(milliseconds=end_ms),
        level=fields.pop("level", "DEFAULT"), environment="default", project_id="support", trace_name="support_team", **fields)


def main() -> None:
    question = [{"role": "system", "content": "You research orders."}, {"role": "user", "content": "Has my desk order #W200 shipped?"}]
    observations = [
        observation("obs-root", "AGENT", "support_team", 0, 900, None, input={"question": "Has my desk order #W200 shipped?"},
                    output={"answer": "Your desk (order #W200) has shipped."}),
        observation("obs-research", "AGENT", "researcher", 10, 400, "obs-root", input={"question": "Has my desk order #W200 shipped?"},
                    output={"order": {"status": "pending", "item": "desk"}}),
        observation("obs-gen-1", "GENERATION", "ChatOpenAI", 20, 250, "obs-research", input=question,
                    output={"role": "assistant", "content": "Order #W200 is a desk; I will look its status up."},
                    model="gpt-4o-2024-08-06", model_parameters={"temperature": 0},
                    usage_details={"input": 120, "output": 18, "total": 138}),
        observation("obs-tool", "TOOL", "get_order", 260, 380, "obs-research", input={"order_id": "#W200"},
                    output={"status": "pending", "item": "desk"}),
        observation("obs-handoff", "EVENT", "handoff", 410, 410, "obs-root", input={"to": "writer"}),
        observation("obs-write", "AGENT", "writer", 420, 890, "obs-root", output="Your desk (order #W200) has shipped."),
        observation("obs-gen-2", "GENERATION", "ChatOpenAI", 430, 880, "obs-write",
                    input=[{"role": "user", "content": "Order #W200: pending. Answer the customer."}],
                    output={"role": "assistant", "content": "Your desk (order #W200) has shipped."},
                    model="gpt-4o-2024-08-06", usage_details={"input": 95, "output": 11, "total": 106}),
    ]
    response = ObservationsV2Response(data=observations, meta=ObservationsV2Meta(cursor=None))
    dumped = response.model_dump(mode="json", by_alias=True, exclude_none=True)  # what the API sends
    (HERE / "langfuse_observations.json").write_text(json.dumps(dumped, indent=1) + "\n")
    print(f"wrote {HERE / 'langfuse_observations.json'}")


if __name__ == "__main__":
    main()
