"""public requests: atomic per-client counters, opt-out confirmation

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
    op.create_table('public_allowances',
    sa.Column('client_hash', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('window_start', sa.String(length=32), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('client_hash', 'kind')
    )
    with op.batch_alter_table('subject_requests') as batch:
        batch.add_column(sa.Column('confirm_token_hash', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('confirm_expires_at', sa.String(length=32), nullable=True))
    # Failed uploads were recorded as requests, to count them; the counters do that now.
    op.execute("DELETE FROM subject_requests WHERE status = 'invalid'")


def downgrade() -> None:
    with op.batch_alter_table('subject_requests') as batch:
        batch.drop_column('confirm_expires_at')
        batch.drop_column('confirm_token_hash')
    op.drop_table('public_allowances')
