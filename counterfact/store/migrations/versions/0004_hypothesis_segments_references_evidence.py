"""hypothesis segments, reference runs and evidence; completed stages of debug sessions

- debug_sessions.completed: the stages a session finished, which the debugger kept as
  spent["done"]; copied from there (left in place, so a debugger of 0003 still resumes).
- hypotheses.trial is renamed segment.
- hypotheses.reference_run_id: the successful run a patch hypothesis transplants from, which
  was written into its note as "reference <run id>"; filled from those notes.
- hypotheses.evidence: free-form details for the report.
- hypotheses (session_id, seq) is unique; a session with repeated seqs is renumbered densely
  (in seq, then id order) first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')

sessions = sa.table(
    'debug_sessions',
    sa.column('id', sa.String),
    sa.column('spent', JSON),
    sa.column('completed', JSON),
)
hypotheses = sa.table(
    'hypotheses',
    sa.column('id', sa.String),
    sa.column('session_id', sa.String),
    sa.column('seq', sa.Integer),
    sa.column('strategy', sa.String),
    sa.column('note', sa.Text),
    sa.column('reference_run_id', sa.String),
)
runs = sa.table('runs', sa.column('id', sa.String))
REFERENCE_NOTE = 'reference '


def upgrade() -> None:
    conn = op.get_bind()
    # A literal server default keeps this a plain ADD COLUMN on SQLite: rebuilding
    # debug_sessions would drop the old table, and that delete cascades to hypotheses.
    with op.batch_alter_table('debug_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('completed', JSON, server_default='[]', nullable=False))
    for session_id, spent in conn.execute(sa.select(sessions.c.id, sessions.c.spent)).all():
        done = spent.get('done') if isinstance(spent, dict) else None
        if isinstance(done, list) and done:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(completed=[str(stage) for stage in done])
            )

    _renumber_repeated_seqs(conn)
    # SQLite rebuilds hypotheses (a column rename and new constraints); no table references it.
    with op.batch_alter_table('hypotheses', schema=None) as batch_op:
        batch_op.alter_column(
            'trial', new_column_name='segment', existing_type=sa.Integer(), existing_nullable=False
        )
        batch_op.add_column(sa.Column('reference_run_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('evidence', JSON, server_default='{}', nullable=False))
        batch_op.create_foreign_key(
            'fk_hypotheses_reference_run_id_runs', 'runs', ['reference_run_id'], ['id'],
            ondelete='SET NULL',
        )
        batch_op.create_index(
            batch_op.f('ix_hypotheses_reference_run_id'), ['reference_run_id'], unique=False
        )
        batch_op.create_unique_constraint('uq_hypotheses_session_seq', ['session_id', 'seq'])

    noted = conn.execute(
        sa.select(hypotheses.c.id, hypotheses.c.note).where(
            hypotheses.c.strategy == 'patch', hypotheses.c.note.startswith(REFERENCE_NOTE)
        )
    ).all()
    references = {h: note.removeprefix(REFERENCE_NOTE).strip() for h, note in noted}
    known = set(
        conn.execute(sa.select(runs.c.id).where(runs.c.id.in_(set(references.values())))).scalars()
    ) if references else set()
    for hypothesis_id, run_id in references.items():
        if run_id in known:
            conn.execute(
                hypotheses.update()
                .where(hypotheses.c.id == hypothesis_id)
                .values(reference_run_id=run_id)
            )


def _renumber_repeated_seqs(conn: sa.Connection) -> None:
    repeated = conn.execute(
        sa.select(hypotheses.c.session_id)
        .group_by(hypotheses.c.session_id, hypotheses.c.seq)
        .having(sa.func.count() > 1)
    ).scalars()
    for session_id in set(repeated):
        ids = conn.execute(
            sa.select(hypotheses.c.id)
            .where(hypotheses.c.session_id == session_id)
            .order_by(hypotheses.c.seq, hypotheses.c.id)
        ).scalars().all()
        for seq, hypothesis_id in enumerate(ids):
            conn.execute(hypotheses.update().where(hypotheses.c.id == hypothesis_id).values(seq=seq))


def downgrade() -> None:
    conn = op.get_bind()
    # completed stages go back where the debugger of 0003 looks for them
    for session_id, spent, completed in conn.execute(
        sa.select(sessions.c.id, sessions.c.spent, sessions.c.completed)
    ).all():
        if completed:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(spent={**(spent or {}), 'done': list(completed)})
            )
    with op.batch_alter_table('hypotheses', schema=None) as batch_op:
        batch_op.drop_constraint('uq_hypotheses_session_seq', type_='unique')
        batch_op.drop_index(batch_op.f('ix_hypotheses_reference_run_id'))
        batch_op.drop_constraint('fk_hypotheses_reference_run_id_runs', type_='foreignkey')
        batch_op.drop_column('evidence')
        batch_op.drop_column('reference_run_id')
        batch_op.alter_column(
            'segment', new_column_name='trial', existing_type=sa.Integer(), existing_nullable=False
        )
    # Not a batch operation: SQLite would rebuild debug_sessions, and dropping the old table
    # cascades to hypotheses. SQLite (3.35+) and PostgreSQL both drop a column in place.
    op.execute('ALTER TABLE debug_sessions DROP COLUMN completed')
