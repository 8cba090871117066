"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 02:27:08.978686
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('media_type', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=True),
    sa.Column('redacted', sa.Boolean(), nullable=False),
    sa.Column('redaction_note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('digest')
    )
    op.create_table('checkpoint_writes',
    sa.Column('thread_id', sa.String(length=200), nullable=False),
    sa.Column('checkpoint_ns', sa.String(length=200), nullable=False),
    sa.Column('checkpoint_id', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=True),
    sa.Column('value', sa.LargeBinary(), nullable=True),
    sa.Column('task_path', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('thread_id', 'checkpoint_ns', 'checkpoint_id', 'task_id', 'idx')
    )
    op.create_table('checkpoints',
    sa.Column('thread_id', sa.String(length=200), nullable=False),
    sa.Column('checkpoint_ns', sa.String(length=200), nullable=False),
    sa.Column('checkpoint_id', sa.String(length=64), nullable=False),
    sa.Column('parent_checkpoint_id', sa.String(length=64), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=True),
    sa.Column('checkpoint', sa.LargeBinary(), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('thread_id', 'checkpoint_ns', 'checkpoint_id')
    )
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index('ix_checkpoints_parent', ['thread_id', 'checkpoint_ns', 'parent_checkpoint_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_checkpoints_run_id'), ['run_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('workflow', sa.String(length=200), nullable=False),
    sa.Column('workflow_hash', sa.String(length=64), nullable=False),
    sa.Column('task_input', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('total_tokens', sa.Integer(), nullable=False),
    sa.Column('total_latency_ms', sa.Float(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('parent_run_id', sa.String(length=32), nullable=True),
    sa.Column('fork_step', sa.Integer(), nullable=True),
    sa.Column('intervention_id', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('step_count', sa.Integer(), nullable=False),
    sa.Column('head_digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['parent_run_id'], ['runs.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_created', ['created_at'], unique=False)
        batch_op.create_index('ix_runs_parent', ['parent_run_id'], unique=False)
        batch_op.create_index('ix_runs_status_created', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_runs_workflow_created', ['workflow', 'created_at'], unique=False)

    op.create_table('steps',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('node', sa.String(length=200), nullable=False),
    sa.Column('agent', sa.String(length=200), nullable=True),
    sa.Column('invocation', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('input_digest', sa.String(length=64), nullable=True),
    sa.Column('output_digest', sa.String(length=64), nullable=True),
    sa.Column('delta_digest', sa.String(length=64), nullable=True),
    sa.Column('checkpoint_before', sa.String(length=64), nullable=True),
    sa.Column('checkpoint_after', sa.String(length=64), nullable=True),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'index', name='uq_steps_run_index')
    )
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.create_index('ix_steps_agent_run', ['agent', 'run_id'], unique=False)

    op.create_table('model_calls',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('request_digest', sa.String(length=64), nullable=False),
    sa.Column('response_digest', sa.String(length=64), nullable=False),
    sa.Column('activations_digest', sa.String(length=64), nullable=True),
    sa.Column('finish_reason', sa.String(length=32), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['step_id'], ['steps.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_calls_step_id'), ['step_id'], unique=False)

    op.create_table('tool_calls',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('step_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('arguments_digest', sa.String(length=64), nullable=False),
    sa.Column('result_digest', sa.String(length=64), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['step_id'], ['steps.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tool_calls', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tool_calls_step_id'), ['step_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tool_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tool_calls_step_id'))

    op.drop_table('tool_calls')
    with op.batch_alter_table('model_calls', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_calls_step_id'))

    op.drop_table('model_calls')
    with op.batch_alter_table('steps', schema=None) as batch_op:
        batch_op.drop_index('ix_steps_agent_run')

    op.drop_table('steps')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_workflow_created')
        batch_op.drop_index('ix_runs_status_created')
        batch_op.drop_index('ix_runs_parent')
        batch_op.drop_index('ix_runs_created')

    op.drop_table('runs')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoints_run_id'))
        batch_op.drop_index('ix_checkpoints_parent')

    op.drop_table('checkpoints')
    op.drop_table('checkpoint_writes')
    op.drop_table('blobs')
