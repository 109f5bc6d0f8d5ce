"""review, cases and sign-in: a source gets a display name; a case its offence type and who
closed it; a mark an optional note and can be withdrawn; a search keeps its probe faces' crops
for review, and how many faces it searched, and each candidate the strangers expected that close; an organisation says whether access reports may name its case numbers; users get a
TOTP second factor, recovery codes and an agency identity-provider link; a session records
whether its second factor is still owed; OpenID Connect log-ins in flight

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
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('display_name', sa.Text(), nullable=False, server_default=''))
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('offence_type', sa.String(length=100), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('closed_by', sa.String(length=200), nullable=True))
    with op.batch_alter_table('marks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('withdrawn_at', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('withdrawn_by', sa.String(length=200), nullable=True))
    with op.batch_alter_table('searches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('faces_searched', sa.Integer(), nullable=True))
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expected_false_matches', sa.Float(), nullable=True))
    with op.batch_alter_table('organisations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reveal_case_numbers', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('totp_enrolled_at', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('identity_provider', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('external_subject', sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint('uq_users_external',
                                          ['identity_provider', 'external_subject'])
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=16), nullable=False,
                                      server_default='full'))
    op.create_table(
        'probe_crops',
        sa.Column('search_id', sa.Integer(), sa.ForeignKey('searches.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('probe_face', sa.Integer(), nullable=False),
        sa.Column('jpeg', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('search_id', 'probe_face'),
    )
    op.create_table(
        'recovery_codes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id'), nullable=False),
        sa.Column('code_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('used_at', sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_recovery_codes_user_id', 'recovery_codes', ['user_id'], unique=False)
    op.create_table(
        'oidc_logins',
        sa.Column('state_hash', sa.String(length=64), nullable=False),
        sa.Column('provider', sa.String(length=200), nullable=False),
        sa.Column('nonce', sa.String(length=200), nullable=False),
        sa.Column('code_verifier', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.String(length=32), nullable=False),
        sa.Column('expires_at', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('state_hash'),
    )


def downgrade() -> None:
    op.drop_table('oidc_logins')
    op.drop_index('ix_recovery_codes_user_id', table_name='recovery_codes')
    op.drop_table('recovery_codes')
    op.drop_table('probe_crops')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('stage')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint('uq_users_external', type_='unique')
        for column in ('external_subject', 'identity_provider', 'totp_last_step',
                       'totp_enrolled_at', 'totp_secret'):
            batch_op.drop_column(column)
    with op.batch_alter_table('organisations', schema=None) as batch_op:
        batch_op.drop_column('reveal_case_numbers')
    with op.batch_alter_table('candidates', schema=None) as batch_op:
        batch_op.drop_column('expected_false_matches')
    with op.batch_alter_table('searches', schema=None) as batch_op:
        batch_op.drop_column('faces_searched')
    with op.batch_alter_table('marks', schema=None) as batch_op:
        for column in ('withdrawn_by', 'withdrawn_at', 'note'):
            batch_op.drop_column(column)
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('closed_by')
        batch_op.drop_column('offence_type')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('display_name')
