"""jobs: one index on (owner, created_at, id) for listing an owner's jobs newest first a keyset page at a time;
it replaces the index on owner alone, which it begins with

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_owner_created', 'jobs', ['owner', 'created_at', 'id'], unique=False)
    op.drop_index('ix_jobs_owner', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_owner', 'jobs', ['owner'], unique=False)
    op.drop_index('ix_jobs_owner_created', table_name='jobs')
