"""erasure log and index generation: erasure that holds across processes

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('erasure_log',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('face_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sqlite_autoincrement=True
    )
    op.create_table('index_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(sa.table('index_state', sa.column('id'), sa.column('generation')),
                   [{'id': 1, 'generation': 0}])
    # Faces journalled before this migration enter the log too, so every process drops them.
    op.execute("INSERT INTO erasure_log (face_id) SELECT face_id FROM pending_erasures ORDER BY face_id")


def downgrade() -> None:
    op.drop_table('index_state')
    op.drop_table('erasure_log')
