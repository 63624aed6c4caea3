"""case media: the extraction report of video/audio cases and a reason for failed ones

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('cases', sa.Column('media', sa.JSON(), nullable=True))
    op.add_column('cases', sa.Column('status_detail', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases') as batch:
        batch.drop_column('status_detail')
        batch.drop_column('media')
