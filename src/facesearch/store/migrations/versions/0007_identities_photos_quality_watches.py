"""people, photos and watches: faces get a quality record and an identity (a cluster, never a
name); images get a perceptual hash and a list of every place they were seen; a search records
every probe photo; case watches and their matches; opt-outs and access requests remember the
identities whose other faces await the officer's review

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'identities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )
    # Adding a foreign key rebuilds SQLite's table: it must keep AUTOINCREMENT, so that a
    # deleted face's id is never given to another face (the erasure log relies on it).
    with op.batch_alter_table('faces', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('face_pixels', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sharpness', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('yaw', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('pitch', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('roll', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('identity_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_faces_identity_id', ['identity_id'], unique=False)
        batch_op.create_foreign_key('fk_faces_identity_id', 'identities', ['identity_id'],
                                    ['id'], ondelete='SET NULL')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phash', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_images_phash', ['phash'], unique=False)
    with op.batch_alter_table('searches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('probe_photos', sa.Text(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('probe_quality', sa.Text(), nullable=False,
                                      server_default='[]'))
    with op.batch_alter_table('subject_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review_identities', sa.Text(), nullable=True))
    op.create_table(
        'sightings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_id', sa.Integer(), sa.ForeignKey('images.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('location', sa.Text(), nullable=False),
        sa.Column('page_url', sa.Text(), nullable=False),
        sa.Column('source_id', sa.Integer(), sa.ForeignKey('sources.id'), nullable=False),
        sa.Column('seen_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('image_id', 'location', 'page_url'),
    )
    op.create_index('ix_sightings_image_id', 'sightings', ['image_id'], unique=False)
    # Images stored before now were seen once: where they were collected.
    op.execute("INSERT INTO sightings (image_id, location, page_url, source_id, seen_at) "
               "SELECT id, location, COALESCE(page_url, ''), source_id, collected_at FROM images")
    op.create_table(
        'watches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('case_id', sa.Integer(), sa.ForeignKey('cases.id'), nullable=False),
        sa.Column('organisation_id', sa.Integer(), sa.ForeignKey('organisations.id'),
                  nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('identity_id', sa.Integer(), nullable=True),
        sa.Column('template', sa.LargeBinary(), nullable=True),
        sa.Column('embedder', sa.String(length=200), nullable=False),
        sa.Column('probe_photos', sa.Text(), nullable=False),
        sa.Column('authorisation', sa.String(length=200), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('requested_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
        sa.Column('requested_actor', sa.String(length=200), nullable=False),
        sa.Column('requested_at', sa.String(length=32), nullable=False),
        sa.Column('approved_by', sa.Integer(), sa.ForeignKey('users.id'), nullable=True),
        sa.Column('approved_at', sa.String(length=32), nullable=True),
        sa.Column('expires_at', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('stopped_at', sa.String(length=32), nullable=True),
        sa.Column('stopped_reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_watches_case_id', 'watches', ['case_id'], unique=False)
    op.create_index('ix_watches_status', 'watches', ['status'], unique=False)
    op.create_table(
        'watch_matches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('watch_id', sa.Integer(), sa.ForeignKey('watches.id'), nullable=False),
        sa.Column('image_sha256', sa.String(length=64), nullable=False),
        sa.Column('face_id', sa.Integer(), nullable=False),
        sa.Column('distance', sa.Float(), nullable=False),
        sa.Column('at', sa.String(length=32), nullable=False),
        sa.Column('emailed', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('watch_id', 'image_sha256'),
    )
    op.create_index('ix_watch_matches_watch_id', 'watch_matches', ['watch_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_watch_matches_watch_id', table_name='watch_matches')
    op.drop_table('watch_matches')
    op.drop_index('ix_watches_status', table_name='watches')
    op.drop_index('ix_watches_case_id', table_name='watches')
    op.drop_table('watches')
    op.drop_index('ix_sightings_image_id', table_name='sightings')
    op.drop_table('sightings')
    with op.batch_alter_table('subject_requests', schema=None) as batch_op:
        batch_op.drop_column('review_identities')
    with op.batch_alter_table('searches', schema=None) as batch_op:
        batch_op.drop_column('probe_quality')
        batch_op.drop_column('probe_photos')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_phash')
        batch_op.drop_column('phash')
    with op.batch_alter_table('faces', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_constraint('fk_faces_identity_id', type_='foreignkey')
        batch_op.drop_index('ix_faces_identity_id')
        for column in ('identity_id', 'roll', 'pitch', 'yaw', 'sharpness', 'face_pixels'):
            batch_op.drop_column(column)
    op.drop_table('identities')
