"""Operations: cancelled jobs, webhooks and their attempts, idempotency keys, reviews

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('callback_url', sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column('webhook_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('webhook_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('webhook_round', sa.Integer(), server_default='0', nullable=False))
    op.create_table('webhook_attempts',
        sa.Column('id', _ID, autoincrement=True, nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('round', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('ms', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_webhook_attempts_job_id'), 'webhook_attempts', ['job_id'], unique=False)
    op.create_table('idempotency_keys',
        sa.Column('owner', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('request', sa.String(length=64), nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('owner', 'key'))
    op.create_index(op.f('ix_idempotency_keys_job_id'), 'idempotency_keys', ['job_id'], unique=False)
    op.create_table('reviews',
        sa.Column('image_id', _ID, nullable=False),
        sa.Column('verdict', sa.String(length=8), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['images.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('image_id'))
    # Retention finds old jobs by age.
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_created_at', table_name='jobs')
    op.drop_table('reviews')
    op.drop_index(op.f('ix_idempotency_keys_job_id'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index(op.f('ix_webhook_attempts_job_id'), table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for column in ('webhook_round', 'webhook_at', 'webhook_status', 'callback_url', 'cancelled_at'):
            batch_op.drop_column(column)
