"""model and tool calls: their place in the step's timeline, the nested agent that made them,
and the agent a tool handed off to

- model_calls.offset_ms, tool_calls.offset_ms: when the call started, in milliseconds from its
  step's start, so a step's calls are shown in the order they happened;
- model_calls.agent, tool_calls.agent: the path of the agent nested in the step that made the
  call ("research_team/researcher"), so agents inside subgraphs are addressable;
- tool_calls.handoff: the agent a handoff tool passed control to.
All nullable: calls recorded before this revision keep NULL, and the hash chain covers these
columns only where they are set, so the links of older runs still verify.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 18:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('model_calls', 'tool_calls'):
        op.add_column(table, sa.Column('offset_ms', sa.Float(), nullable=True))
        op.add_column(table, sa.Column('agent', sa.String(length=200), nullable=True))
    op.add_column('tool_calls', sa.Column('handoff', sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column('tool_calls', 'handoff')
    for table in ('model_calls', 'tool_calls'):
        op.drop_column(table, 'agent')
        op.drop_column(table, 'offset_ms')
