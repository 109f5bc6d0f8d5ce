"""model-aware descriptors: every face and suppression records the embedder of its descriptor
and keeps its face chip's geometry; descriptors made by a re-embedding job wait beside them
until the switch; the index state names the gallery's live embedder; an opt-out keeps its
first photo's perceptual hash until confirmed

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Descriptors stored before this migration are all dlib's ResNet.
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedder', sa.String(length=200), nullable=False,
                                      server_default='dlib-resnet'))
        batch_op.add_column(sa.Column('chip_geometry', sa.Text(), nullable=True))
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedder', sa.String(length=200), nullable=False,
                                      server_default='dlib-resnet'))
        batch_op.add_column(sa.Column('chip', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('chip_geometry', sa.Text(), nullable=True))
    with op.batch_alter_table('index_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedder', sa.String(length=200), nullable=True))
    with op.batch_alter_table('subject_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('photo_hash', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('template_embedder', sa.String(length=200), nullable=True))
    op.execute("UPDATE index_state SET embedder = 'dlib-resnet' WHERE EXISTS "
               "(SELECT 1 FROM faces) OR EXISTS (SELECT 1 FROM suppressions)")
    op.execute("UPDATE subject_requests SET template_embedder = 'dlib-resnet' "
               "WHERE template IS NOT NULL")
    op.create_table(
        'face_descriptors',
        sa.Column('face_id', sa.Integer(), sa.ForeignKey('faces.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('embedder', sa.String(length=200), nullable=False),
        sa.Column('embedding', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('face_id', 'embedder'),
    )
    op.create_table(
        'suppression_descriptors',
        sa.Column('suppression_id', sa.Integer(),
                  sa.ForeignKey('suppressions.id', ondelete='CASCADE'), nullable=False),
        sa.Column('embedder', sa.String(length=200), nullable=False),
        sa.Column('embedding', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('suppression_id', 'embedder'),
    )


def downgrade() -> None:
    op.drop_table('suppression_descriptors')
    op.drop_table('face_descriptors')
    with op.batch_alter_table('subject_requests', schema=None) as batch_op:
        batch_op.drop_column('template_embedder')
        batch_op.drop_column('photo_hash')
    with op.batch_alter_table('index_state', schema=None) as batch_op:
        batch_op.drop_column('embedder')
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_column('chip_geometry')
        batch_op.drop_column('chip')
        batch_op.drop_column('embedder')
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.drop_column('chip_geometry')
        batch_op.drop_column('embedder')
