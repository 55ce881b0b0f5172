"""predictions.declares_ai: the file carries evidence that it is AI-generated (Content Credentials, XMP/IPTC,
generator tags), so a job can count such files without reading every prediction's details

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('declares_ai', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('declares_ai')
