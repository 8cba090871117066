"""tool calls: an index on (arguments_digest, name), so that what a tool returned for the same
arguments in other runs (its precedents, which the debugger compares a result with) is found
by a lookup instead of a scan of every call.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 06:10:00.000000
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tool_calls_arguments', 'tool_calls', ['arguments_digest', 'name'])


def downgrade() -> None:
    op.drop_index('ix_tool_calls_arguments', table_name='tool_calls')
