"""jobs.rerun_of: the job whose files a job classifies again (POST /api/jobs/<id>/rerun); no foreign key, since
the earlier job may be deleted and its rerun kept

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rerun_of', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('rerun_of')
