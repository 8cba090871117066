"""runs.search_text for the runs list's text search; an index in the list's own order

- runs.search_text: the run's id, workflow and task input, lower-cased and cut to 2,000
  characters, kept by the store when it writes a run, so that a text search scans one plain
  column instead of casting every run's JSON to text; filled here for existing runs.
- ix_runs_created_id (created_at, id) replaces ix_runs_created: the runs list orders by both,
  newest first, and pages by both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 21:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

SEARCH_CHARS = 2000


def upgrade() -> None:
    # plain ALTER TABLE (no batch copy): recreating `runs` on SQLite would cascade deletes
    op.add_column('runs', sa.Column('search_text', sa.Text(), nullable=False, server_default=''))
    runs = sa.table('runs', sa.column('id', sa.String), sa.column('workflow', sa.String),
                    sa.column('task_input', sa.JSON), sa.column('search_text', sa.Text))
    text = runs.c.id + ' ' + runs.c.workflow + ' ' + sa.cast(runs.c.task_input, sa.Text)
    op.execute(runs.update().values(search_text=sa.func.lower(sa.func.substr(text, 1, SEARCH_CHARS))))
    op.create_index('ix_runs_created_id', 'runs', ['created_at', 'id'])
    op.drop_index('ix_runs_created', table_name='runs')


def downgrade() -> None:
    op.create_index('ix_runs_created', 'runs', ['created_at'])
    op.drop_index('ix_runs_created_id', table_name='runs')
    op.drop_column('runs', 'search_text')  # SQLite 3.35+ drops a column in place
