"""Tables of the metadata store. Portable SQLAlchemy Core: SQLite embedded, PostgreSQL deployed."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("lawful_basis", Text, nullable=False),
    Column("jurisdiction", String(7), nullable=False),  # ISO 3166-1 alpha-2 or "unknown"
    Column("description", Text, nullable=False, default=""),
    Column("created_at", String(32), nullable=False),
    Column("retention_days", Integer, nullable=False),  # images older than this are destroyed
    Column("display_name", Text, nullable=False, default="", server_default=""),  # shown to people; name if ""
)

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("location", Text, nullable=False),  # a path or URL
    Column("page_url", Text),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False, index=True),
    Column("jurisdiction", String(7), nullable=False, index=True),
    Column("collected_at", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String(16), nullable=False),
    Column("withheld_faces", Integer, nullable=False, default=0),  # suppressed at ingest
    # JSON: for web images the page title, alt text, fetch time and crawl job; {} for files.
    Column("provenance", Text, nullable=False, default="{}"),
    # The pixels' 64-bit perceptual hash (imagehash pHash, hex): near-duplicates of a photo
    # (resized, recompressed, cropped) are within a few bits of it.
    Column("phash", String(16), index=True),
)

# People as groups of faces, made by clustering: internal groupings, not names.
identities = Table(
    "identities",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", String(32), nullable=False),
    # Never reuse an erased identity's number: watches and reviews refer to identities by it.
    sqlite_autoincrement=True,
)

faces = Table(
    "faces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("face_index", Integer, nullable=False),  # position within its image, largest first
    Column("box_left", Integer, nullable=False),
    Column("box_top", Integer, nullable=False),
    Column("box_right", Integer, nullable=False),
    Column("box_bottom", Integer, nullable=False),
    Column("landmarks", Text, nullable=False),  # JSON [[x, y], ...], 5 points
    Column("detector_score", Float, nullable=False),
    Column("quality", Float, nullable=False),
    Column("crop_path", Text, nullable=False),  # relative to the crops directory
    Column("embedding", LargeBinary, nullable=False),  # float32 little-endian
    Column("embedder", String(200), nullable=False, server_default="dlib-resnet"),  # its model
    # JSON {"box", "landmarks"} in the crop's pixels (vision.chips); empty for crops kept
    # before 0006, which re-embedding detects again.
    Column("chip_geometry", Text),
    # The quality record (vision.quality); empty for faces stored before it existed.
    Column("face_pixels", Integer),  # the shorter side of the box, in the photo's pixels
    Column("sharpness", Float),  # v / (v + 200), v the face chip's Laplacian variance
    Column("yaw", Float),  # degrees, estimated from the five landmarks
    Column("pitch", Float),
    Column("roll", Float),
    # The internal grouping of faces into people (service.identities); never a name.
    Column("identity_id", Integer, ForeignKey("identities.id", ondelete="SET NULL"), index=True),
    UniqueConstraint("image_id", "face_index"),
    # Face ids are never reused: the vector index and the erasure journal refer to them.
    sqlite_autoincrement=True,
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("embedding", LargeBinary, nullable=False),  # the person's template, not their photo
    Column("reason", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("embedder", String(200), nullable=False, server_default="dlib-resnet"),
    # The face chip (JPEG) and its geometry: what keeps the block in force when the embedder
    # changes (re-embedding describes it again); empty for suppressions made before 0006.
    Column("chip", LargeBinary),
    Column("chip_geometry", Text),
)

# Descriptors that `facesearch reembed` made with the next embedder, waiting for the switch
# that moves them into faces.embedding / suppressions.embedding in one transaction.
face_descriptors = Table(
    "face_descriptors",
    metadata,
    Column("face_id", Integer, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
    Column("embedder", String(200), primary_key=True),
    Column("embedding", LargeBinary, nullable=False),
)

suppression_descriptors = Table(
    "suppression_descriptors",
    metadata,
    Column("suppression_id", Integer, ForeignKey("suppressions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("embedder", String(200), primary_key=True),
    Column("embedding", LargeBinary, nullable=False),
)

# Faces deleted from the metadata whose vector and crop file may still exist: written in the
# same transaction as the deletion, cleared once index and disk are clean. A crash in between
# leaves work here, which the next start finishes, so a deletion can never be half done.
pending_erasures = Table(
    "pending_erasures",
    metadata,
    Column("face_id", Integer, primary_key=True, autoincrement=False),
    Column("crop_path", Text, nullable=False),
)

# Every erasure of a face, in commit order, kept for good (ids only, no biometric data). Each
# process's in-memory index replays the entries after the sequence number it has applied before
# it searches, and a writer before it saves, so no process can write back a vector that another
# erased, however stale its copy (store/metadata.py, service/engine.py). Appended only under
# the writer lock, so that sequence order is commit order (on PostgreSQL too): a reader that
# has applied entry n has seen every entry before it.
erasure_log = Table(
    "erasure_log",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("face_id", Integer, nullable=False),
    sqlite_autoincrement=True,
)

# One row: the generation of the index files on disk, raised whenever the index is rebuilt
# (reindex, a change of kind). A process holding another generation reloads instead of saving.
index_state = Table(
    "index_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", Integer, nullable=False),
    # The embedder of every stored descriptor: empty until the first face or suppression.
    Column("embedder", String(200)),
)

# Append-only and hash-chained: each record holds the hash of the one before and its own hash
# over all its fields, so an edited or deleted record breaks the chain (policy/audit.py).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # contiguous: 1, 2, 3...
    Column("at", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("actor_id", Integer),  # users.id; empty for the local operator
    Column("organisation", String(200), nullable=False, default=""),
    Column("role", String(32), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("case_number", String(100), nullable=False, default=""),
    Column("purpose", String(200), nullable=False, default=""),
    Column("client", String(100), nullable=False, default=""),  # client address, or "cli"
    Column("detail", Text, nullable=False),  # JSON: counts, ids, scores, hashes; never pixels
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# One row. Appending to the audit log first updates it, which takes the database's write lock
# (SQLite) or the row lock (PostgreSQL), so concurrent appenders chain one after another.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("appends", Integer, nullable=False),
    # Retention removes the oldest records; the chain then starts after this anchor.
    Column("pruned_through", Integer, nullable=False, default=0),
    Column("pruned_hash", String(64), nullable=False, default="0" * 64),
    # HMAC-SHA256, with a key kept outside the database, of the anchor and the last record
    # (policy.audit.head_mac): who rewrites the chain cannot sign its new head.
    Column("head_mac", String(64)),
)

organisations = Table(
    "organisations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", String(32), nullable=False),
    # Comma-separated ISO codes: its searches return only faces from these; empty = all.
    Column("jurisdictions", Text, nullable=False, default=""),
    # Whether an access report may name the case numbers of this organisation's searches.
    Column("reveal_case_numbers", Boolean, nullable=False, default=False, server_default=false()),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("role", String(32), nullable=False),  # policy/roles.py ROLES
    Column("status", String(16), nullable=False),  # pending, active or disabled
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("created_at", String(32), nullable=False),
    Column("approved_by", Integer, ForeignKey("users.id")),
    Column("approved_at", String(32)),
    # The second factor: a TOTP secret (base32) once enrolment is confirmed, and the last time
    # step a code was accepted for, so that one code is never accepted twice.
    Column("totp_secret", Text),
    Column("totp_enrolled_at", String(32)),
    Column("totp_last_step", Integer),
    # A user who signs in through an agency's identity provider (OpenID Connect): the provider's
    # name in settings and the "sub" claim it gives them.
    Column("identity_provider", String(200)),
    Column("external_subject", String(255)),
    UniqueConstraint("identity_provider", "external_subject", name="uq_users_external"),
)

# Single-use recovery codes for a lost second factor, stored as sha256 (random, not guessable).
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("code_hash", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("used_at", String(32)),
)

# OpenID Connect log-ins in flight: the state sent to the provider (hashed), its nonce and PKCE
# verifier, until the provider sends the browser back.
oidc_logins = Table(
    "oidc_logins",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("provider", String(200), nullable=False),
    Column("nonce", String(200), nullable=False),
    Column("code_verifier", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("prefix", String(16), nullable=False),  # shown in lists to tell keys apart
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 of the key
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie value
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
    # "full"; "code" while a password-checked log-in waits for its one-time code; "enrol"
    # while a user who must have a second factor has yet to set one up.
    Column("stage", String(16), nullable=False, default="full", server_default="full"),
)

# Log-in throttle, one row per key: a username ("user:..."), a client address ("addr:...") or a
# remembered browser ("device:..."). Log-in locks its rows before it verifies a password, so
# parallel attempts are counted one after another (service/accounts.py).
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),  # since the last success; attempts in flight count
    Column("locked_until", String(32)),  # no password is checked for the key before then
    Column("last_at", String(32), nullable=False, index=True),
)

# Browsers that have logged in as a user: their log-ins as that user skip the username's and the
# address's throttle for one of their own, so a stranger's failures cannot lock the user out.
login_devices = Table(
    "login_devices",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie value
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("created_at", String(32), nullable=False),
    Column("expires_at", String(32), nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", Integer, ForeignKey("organisations.id"), nullable=False, index=True),
    Column("number", String(100), nullable=False),
    Column("purpose", String(200), nullable=False),
    Column("offence_type", String(100), nullable=False, default="", server_default=""),
    Column("authorisation", String(200), nullable=False, default=""),
    Column("keep_probes", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),  # open or closed
    Column("opened_by", Integer, ForeignKey("users.id")),
    Column("opened_at", String(32), nullable=False),
    Column("closed_at", String(32)),
    Column("closed_by", String(200)),  # who closed it
    UniqueConstraint("organisation_id", "number"),
)

searches = Table(
    "searches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False, index=True),
    Column("organisation_id", Integer, ForeignKey("organisations.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("actor", String(200), nullable=False),
    Column("at", String(32), nullable=False, index=True),
    Column("probe_sha256", String(64), nullable=False),
    Column("probe_path", Text),  # kept only when the case asks for it
    Column("probe_faces", Text, nullable=False),  # JSON [[left, top, right, bottom], ...] searched
    # JSON list of the sha256 of every probe photo of a multi-photo search (one for one photo).
    Column("probe_photos", Text, nullable=False, server_default="[]"),
    # JSON per probe face: its quality record, warnings and what they bound.
    Column("probe_quality", Text, nullable=False, server_default="[]"),
    Column("faces_searched", Integer),  # the gallery's size for this search (None before 0008)
)

# A candidate list keeps the provenance it showed, so the case record stays readable; the
# face id points at the live face while it exists.
candidates = Table(
    "candidates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("search_id", Integer, ForeignKey("searches.id"), nullable=False, index=True),
    Column("probe_face", Integer, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("face_id", Integer, nullable=False, index=True),
    Column("distance", Float, nullable=False),
    Column("false_match_probability", Float, nullable=False),
    Column("image_sha256", String(64), nullable=False),
    Column("location", Text, nullable=False),
    Column("page_url", Text),
    Column("source", String(200), nullable=False),
    Column("jurisdiction", String(7), nullable=False),
    Column("collected_at", String(32), nullable=False),
    # false_match_probability x faces searched, as shown (None before 0008).
    Column("expected_false_matches", Float),
    # Set when the face is erased: the provenance above is blanked, the row says when.
    Column("erased_at", String(32)),
)

marks = Table(
    "marks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("candidate_id", Integer, ForeignKey("candidates.id"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id")),
    Column("actor", String(200), nullable=False),
    Column("mark", String(16), nullable=False),  # possible, confirmed or rejected
    Column("at", String(32), nullable=False),
    Column("note", Text, nullable=False, default="", server_default=""),
    # A withdrawn mark stays in the record but counts for nothing (the two-person rule included).
    Column("withdrawn_at", String(32)),
    Column("withdrawn_by", String(200)),
)

# The probe faces of a search, cropped (JPEG), for the review page and the report: the case's
# record of what was searched, even where the probe photo itself is not kept.
probe_crops = Table(
    "probe_crops",
    metadata,
    Column("search_id", Integer, ForeignKey("searches.id", ondelete="CASCADE"), primary_key=True),
    Column("probe_face", Integer, primary_key=True),
    Column("jpeg", LargeBinary, nullable=False),
)

ingest_jobs = Table(
    "ingest_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, done, failed, interrupted
    Column("started_by", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("progress", Text, nullable=False, default="{}"),  # JSON counts, as IngestSummary
    Column("error", Text),
    # The server process running the job (host:pid:token) and when it last said so: a job
    # is interrupted only when its heartbeat has stopped, not when another process starts.
    Column("owner", String(200)),
    Column("heartbeat_at", String(32)),
)

# Messages for users, shown on their next visit (a candidate they received was erased).
notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("message", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("seen_at", String(32)),
)

# Every place an image was seen: the page and URL it was first collected from, and every
# other page or URL its bytes (same sha256) turned up on later.
sightings = Table(
    "sightings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("location", Text, nullable=False),
    Column("page_url", Text, nullable=False, default=""),  # "" when not from a page
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("seen_at", String(32), nullable=False),
    UniqueConstraint("image_id", "location", "page_url"),
)

# Case watches: tell an investigator when newly collected images match a probe or an
# identity. Active only once a supervisor approves, and only until expires_at.
watches = Table(
    "watches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False, index=True),
    Column("organisation_id", Integer, ForeignKey("organisations.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # probe or identity
    Column("identity_id", Integer),  # for an identity watch (identities change: no key)
    Column("template", LargeBinary),  # the probe's descriptor, or the identity's at the start
    Column("embedder", String(200), nullable=False),  # the model that made template
    Column("probe_photos", Text, nullable=False, default="[]"),  # JSON sha256 list
    Column("authorisation", String(200), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("requested_by", Integer, ForeignKey("users.id")),
    Column("requested_actor", String(200), nullable=False),
    Column("requested_at", String(32), nullable=False),
    Column("approved_by", Integer, ForeignKey("users.id")),
    Column("approved_at", String(32)),
    Column("expires_at", String(32), nullable=False),
    # pending, active, refused, stopped (suppression, opt-out, closed case, by hand), expired
    Column("status", String(16), nullable=False, index=True),
    Column("stopped_at", String(32)),
    Column("stopped_reason", Text),
)

# A watch's matches, one per image: a later copy of the same image never notifies again.
watch_matches = Table(
    "watch_matches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("watch_id", Integer, ForeignKey("watches.id"), nullable=False, index=True),
    Column("image_sha256", String(64), nullable=False),
    Column("face_id", Integer, nullable=False),  # the face may since have been erased
    Column("distance", Float, nullable=False),
    Column("at", String(32), nullable=False),
    Column("emailed", Boolean, nullable=False, default=False),
    UniqueConstraint("watch_id", "image_sha256"),
)

# Data-subject requests: opt-outs (erasure and objection, done at once) and access requests
# (queued for the data-protection officer). Selfies are never stored; an access request keeps
# the person's template only until it is answered.
subject_requests = Table(
    "subject_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("public_id", String(32), nullable=False, unique=True),  # on the receipt
    Column("kind", String(16), nullable=False),  # erasure or access
    Column("status", String(16), nullable=False),  # done, pending, approved, rejected, delivered
    Column("received_at", String(32), nullable=False),
    Column("deadline", String(32), nullable=False),
    Column("extended_reason", Text),  # set once, when the deadline is extended
    Column("contact", Text, nullable=False, default=""),
    Column("client_hash", String(64), nullable=False, index=True),  # for per-client limits
    Column("template", LargeBinary),  # access requests until answered
    Column("images_found", Integer, nullable=False, default=0),
    Column("faces_removed", Integer, nullable=False, default=0),
    Column("decided_by", String(200)),
    Column("decided_at", String(32)),
    Column("decision_note", Text),
    Column("report_token_hash", String(64), unique=True),
    Column("report_expires_at", String(32)),
    Column("report_used_at", String(32)),
    # An opt-out hides the person at once; erasure waits for a second photo before this time.
    Column("confirm_token_hash", String(64)),
    Column("confirm_expires_at", String(32)),
    # The first photo's perceptual hash, until confirmed: the second must be another photo.
    Column("photo_hash", String(16)),
    Column("template_embedder", String(200)),  # the model that made template
    # JSON ids of the identities of the faces an opt-out erased or an access request found
    # within the strict cut-off: their other faces wait for the officer's review.
    Column("review_identities", Text),
)

# Counters of anonymous clients (by address hash) in fixed windows: requests per day, photos
# per hour, refusals per hour. Each request changes its row with one conditional UPDATE, so that
# parallel requests cannot all pass a check made before any of them is counted.
public_allowances = Table(
    "public_allowances",
    metadata,
    Column("client_hash", String(64), primary_key=True),
    Column("kind", String(64), primary_key=True),  # requests, attempts, or refused:<action>
    Column("window_start", String(32), nullable=False),
    Column("used", Integer, nullable=False),
)

crawl_jobs = Table(
    "crawl_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(200), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("seeds", Text, nullable=False),  # JSON list of URLs
    Column("allow", Text, nullable=False),  # JSON list of hosts, URL prefixes or * patterns
    Column("max_depth", Integer, nullable=False),
    Column("max_pages", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # queued, running, paused, cancelled, done
    Column("created_by", String(200), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("finished_at", String(32)),
)

# The frontier: every URL a job met, once, with what became of it. Its state is committed
# with each result, so a killed crawl resumes where it stopped and ends in the same state.
crawl_urls = Table(
    "crawl_urls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("crawl_jobs.id"), nullable=False),
    Column("url", Text, nullable=False),  # normalised
    Column("kind", String(8), nullable=False),  # page or image
    Column("depth", Integer, nullable=False),
    Column("state", String(12), nullable=False),  # queued, done, refused, failed, skipped
    Column("reason", String(40), nullable=False, default=""),  # why refused, failed or skipped
    Column("page_url", Text),  # for an image: the page it was found on
    Column("page_title", Text, nullable=False, default=""),
    Column("alt_text", Text, nullable=False, default=""),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("fetched_at", String(32)),
    Column("bytes", Integer, nullable=False, default=0),
    Column("faces", Integer, nullable=False, default=0),
    UniqueConstraint("job_id", "url", "kind"),
)
Index("crawl_urls_queue", crawl_urls.c.job_id, crawl_urls.c.state, crawl_urls.c.id)

crawl_hosts = Table(
    "crawl_hosts",
    metadata,
    Column("job_id", Integer, ForeignKey("crawl_jobs.id"), primary_key=True),
    Column("host", String(300), primary_key=True),  # scheme://host[:port]
    Column("robots", Text),  # robots.txt as fetched; empty when there is none
    Column("fetched_at", String(32), nullable=False),
)
