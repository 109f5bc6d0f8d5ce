"""Settings: one object, read from FACESEARCH_* environment variables, passed explicitly."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facesearch.policy.roles import ROLES

# Roles that read every organisation's records (the whole audit trail, every access request):
# they go to the deployment's own people only (deployment_organisation).
DEPLOYMENT_ROLES = frozenset({"auditor", "dpo"})


class OidcProvider(BaseModel):
    """An agency's OpenID Connect identity provider (FACESEARCH_OIDC_PROVIDERS, a JSON list)."""

    name: str = Field(pattern=r"^[a-z0-9-]{1,40}$", description="In URLs and on the button.")
    title: str = Field(default="", description="The button's words: Sign in with <title>.")
    issuer: str = Field(description="Its issuer URL; /.well-known/openid-configuration under it "
                        "gives the endpoints and keys.")
    client_id: str
    client_secret: SecretStr
    organisation: str = Field(description="The facesearch organisation its users belong to.")
    role_claim: str = Field(default="", description="The ID token claim (a string or a list) "
                            "that roles are mapped from; none: roles are assigned locally.")
    roles: dict[str, str] = Field(default_factory=dict, description="Claim value -> role.")
    create_users: bool = Field(default=False, description="Create an unknown user at first "
                               "sign-in (with a mapped role); otherwise an admin links them.")
    username_claim: str = Field(default="preferred_username")

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: dict[str, str]) -> dict[str, str]:
        # A typo would otherwise leave its claim value quietly mapping to nothing.
        unknown = sorted({role for role in value.values() if role not in ROLES})
        if unknown:
            raise ValueError(f"roles maps to {', '.join(unknown)}, not one of {', '.join(ROLES)}")
        return value


class Settings(BaseSettings):
    """Every tunable of facesearch. Environment variables use the FACESEARCH_ prefix."""

    model_config = SettingsConfigDict(env_prefix="FACESEARCH_", extra="ignore")

    home: Path = Field(
        default=Path("facesearch-data"),
        description="Data directory: metadata.sqlite3, crops/ and the vector index.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata store; default: SQLite inside home.",
    )
    queue_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of the distributed-ingest queue (procrastinate), as "
        "postgresql://... or postgresql+psycopg://...; default: the metadata store's database "
        "when that is PostgreSQL.",
    )
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, le=89_478_485,
        description="Images declaring more pixels are refused before decoding (decompression-"
        "bomb guard). One decode holds at most 16 bytes per pixel of this (800 MB at the "
        "default, WebP's decoder being the widest); at most Pillow's own limit, which stays on behind it.",
    )
    max_image_bytes: int = Field(default=50 * 1024 * 1024, description="Larger files are refused.")
    max_concurrent_decodes: int = Field(
        default=2, ge=1,
        description="Image decodes running at once per process; more wait their turn, so that "
        "simultaneous large uploads cannot multiply the memory of one.",
    )
    detect_max_side: int = Field(
        default=1600,
        description="Detection runs on a copy downscaled to this longest side; alignment "
        "uses the image decoded at full resolution, or reduced to no less than twice this.",
    )
    detector: str = Field(
        default="yunet",
        description="Face detector: yunet (OpenCV Zoo's YuNet: small and turned faces, five "
        "landmarks, about 10x faster than hog), hog (dlib, frontal), cnn (dlib MMOD) or hog+cnn "
        "(CNN only where HOG finds nothing).",
    )
    embedder: str = Field(
        default="sface",
        description="Face descriptor for new faces and probes: sface (OpenCV Zoo's SFace on "
        "ONNX Runtime), dlib-resnet, fused (both, concatenated), or the path of an ONNX model "
        "manifest (JSON). Changing it on a gallery runs `facesearch reembed` (see README).",
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="Where the ONNX models run: cpu, or cuda (ONNX Runtime's CUDA provider; "
        "needs onnxruntime-gpu). dlib models run on the CPU.",
    )
    model_dir: Path = Field(
        default=Path.home() / ".cache" / "facesearch" / "models",
        description="Where `facesearch models install` puts the ONNX model files, verified by "
        "sha256 at every load; nothing is downloaded at run time.",
    )
    upsample: int = Field(
        default=1,
        description="Detector upsampling passes for small images (each doubles the image to "
        "find faces half as small), applied only while the image stays within detect_max_side.",
    )
    min_face_size: int = Field(
        default=40, description="Faces narrower than this (pixels, original image) are ignored."
    )
    # Face quality minimums (vision.quality): ingest withholds a face below any of them, a
    # search warns about a probe face below them. Defaults from `facesearch eval quality` on
    # LFW (README, face quality): each is where measured rank-1 falls, or beyond what LFW shows.
    quality_min_face_pixels: int = Field(
        default=24, ge=0,
        description="Quality: the shortest face side, in the original photo's pixels, that is "
        "indexed; a probe face below it is warned about. Rank-1 was 95% to 97% for faces of 24 "
        "to 56 px and 85% below 24 (min_face_size already ignores faces under 40 px wide).")
    quality_min_sharpness: float = Field(
        default=0.02, ge=0, lt=1,
        description="Quality: the lowest sharpness (0 to 1, the face chip's Laplacian variance v "
        "as v / (v + 200)) that is indexed; a probe face below it is warned about. Rank-1 was "
        "91% from 0.02 to 0.04 and 82% below; no LFW subject scored under 0.07.")
    quality_max_yaw: float = Field(
        default=60.0, ge=0, le=90,
        description="Quality: the largest head turn (degrees, from the landmarks) that is "
        "indexed; a probe face beyond it is warned about (near-profiles: one eye hidden). Rank-1 "
        "fell slowly with the turn: 94% to 30 degrees, 87% from 45 to 60, 85% beyond (13 "
        "probes). Faces without a yaw (HOG, CNN) pass.")
    quality_max_pitch: float = Field(
        default=30.0, ge=0, le=90,
        description="Quality: the largest nod up or down (degrees, from the landmarks) that is "
        "indexed; a probe face beyond it is warned about. LFW has almost none past 20 degrees. "
        "Faces without a pitch pass.")
    quality_min_confidence: float = Field(
        default=0.0,
        description="Quality: the lowest detector confidence that is indexed (YuNet's score, "
        "0.7 to 1; HOG's and MMOD's are on other scales: set it for the detector in use). Off "
        "by default, since its scale is the detector's: for YuNet 0.8 suits (rank-1 59% below "
        "it, 17 probes; 78% from 0.8 to 0.9, mostly copies that size and sharpness judge; no "
        "LFW subject under it).")
    mirror_gallery: bool = Field(
        default=False,
        description="Average the descriptors of each indexed face's chip and its mirror "
        "image. Doubles descriptor time at ingest for a small accuracy gain (see "
        "`facesearch eval lfw`).",
    )
    mirror_probe: bool = Field(
        default=True,
        description="The same for probe faces (search, suppress): one face per search, so "
        "the cost is negligible.",
    )
    embed_batch: int = Field(default=16, description="Face chips per descriptor batch.")
    workers: int = Field(default=0, description="Ingest worker processes; 0 means one per core.")
    search_false_matches: float = Field(
        default=10.0, gt=0,
        description="Strangers expected inside the candidate cut-off of one probe face: the "
        "cut-off is the distance whose false-match probability (the embedder's calibration) "
        "times the faces searched is this. 10 because a list has top_k = 10 places: "
        "strangers may fill them only where no one nearer is found, and every candidate past 1 "
        "expected stranger is marked weak. The same target bounds the opt-out review band.",
    )
    suppress_false_matches: float = Field(
        default=0.01, gt=0,
        description="Strangers expected to be erased or hidden by one suppression or opt-out "
        "over the whole gallery: faces within the resulting strict cut-off of the person's "
        "template are erased at once, withheld at ingest and hidden from search, counted "
        "against the gallery's face count (every face of the gallery meets every template). "
        "0.01: one stranger in a hundred opt-outs; faces farther out, up to the search "
        "cut-off, go to the data-protection officer's review instead.",
    )
    false_match_ceiling: float = Field(
        default=0.01, gt=0, le=1,
        description="No cut-off allows a higher false-match probability, however few faces "
        "are compared: one pair of different people in a hundred (distance 1.19 for "
        "sface; 0.43 for dlib-resnet, near its old fixed 0.45), so that a small gallery's "
        "target does not reach distances where a person's photos and strangers' mix.",
    )
    identity_false_match_probability: float = Field(
        default=2e-6, gt=0, le=0.01,
        description="Identities (clustering): two faces are close enough to be grouped when "
        "the live embedder's calibration gives their distance at most this false-match "
        "probability per pair (2e-6: distance 0.9375 for sface, 0.2825 for dlib-resnet). "
        "Chosen on `facesearch eval cluster`'s curve: the loosest with BCubed precision of "
        "at least 0.97 on LFW. Strangers within reach of one face grow with the gallery "
        "(this times its faces): keep that well under 1.",
    )
    identity_min_faces: int = Field(
        default=3, ge=1,
        description="Identities (clustering): a face starts or links an identity (a core) "
        "when at least this many faces, itself included, of other images lie within the "
        "grouping distance, as Immich's minimum faces; other faces only join one.",
    )
    watch_false_matches: float = Field(
        default=1.0, gt=0,
        description="Strangers expected to match one case watch over a gallery's worth of new "
        "faces: a watch meets every face collected while it runs, so its cut-off is the "
        "distance whose false-match probability times the gallery's face count is this. 1, "
        "between search's 10 (a list the investigator asked for, read at once) and "
        "suppression's 0.01: each false notification sends an investigator a stranger's photo "
        "unasked, while a missed one can still be found by a search.",
    )
    watch_max_days: int = Field(
        default=90, ge=1, le=366,
        description="The longest a case watch may run, in days from its request; the "
        "investigator asks for at most this, and renews with a new request and approval.",
    )
    top_k: int = Field(default=10, description="Candidates returned per probe face by default.")
    max_candidates: int = Field(
        default=50, ge=1, le=50,
        description="The most candidates a search returns, over all its probe faces (at most "
        "50); a probe with several faces shares them out.",
    )
    max_probe_photos: int = Field(
        default=5, ge=1, le=20,
        description="The most photos of one person a search may take as one probe (their "
        "descriptors fused; README, multi-photo searches). Together they may hold at most "
        "max_upload_bytes.",
    )
    max_fetch: int = Field(
        default=20_000, ge=100,
        description="The most neighbours a search asks the index for while filtering (by an "
        "organisation's jurisdictions, erasures, suppressions) leaves fewer than it needs: a "
        "bound on one search's memory and time; matches past it are missed.",
    )
    search_purposes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["criminal investigation", "missing person",
                                 "victim identification", "fraud investigation"],
        description="The purposes a case may give for its searches (comma-separated).",
    )
    offence_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["homicide", "assault", "sexual offence", "child sexual abuse",
                                 "robbery", "burglary", "theft", "fraud", "human trafficking",
                                 "terrorism", "missing person", "other"],
        description="The offence or incident types a case is opened for (comma-separated).",
    )
    searches_per_minute_user: int = Field(default=10, description="Searches one user may make per minute.")
    searches_per_day_user: int = Field(default=200, description="Searches one user may make per day.")
    searches_per_minute_organisation: int = Field(
        default=30, description="Searches one organisation's users may make per minute, together.")
    searches_per_day_organisation: int = Field(
        default=2000, description="Searches one organisation's users may make per day, together.")
    login_failures_allowed: int = Field(
        default=10, ge=1, description="Failed log-ins per username, per client address and per "
        "remembered browser (within 15 minutes) before each further attempt must wait: 15 s, "
        "doubling with each failure up to login_lock_max_seconds.")
    login_lock_max_seconds: int = Field(
        default=300, ge=15, description="The longest wait between log-in attempts once a "
        "username, address or browser is over login_failures_allowed.")
    session_hours: int = Field(default=8, description="A web session lasts this long.")
    second_factor_failures_allowed: int = Field(
        default=10, ge=1, description="Wrong second-factor codes in a row (however far apart) "
        "after which a user's authenticator codes are refused: only one of their recovery codes "
        "or a reset by an admin or the operator opens their log-in again.")
    oidc_providers: list[OidcProvider] = Field(
        default_factory=list, description="Agency identity providers (OpenID Connect) staff may "
        "sign in with, as a JSON list of objects: name, title, issuer, client_id, client_secret, "
        "organisation, role_claim, roles, create_users, username_claim (config.OidcProvider).")
    max_upload_bytes: int = Field(
        default=20 * 1024 * 1024,
        description="The largest HTTP request body (a probe, or a batch of images to ingest), "
        "and the most bytes a search's probe photos may hold together.",
    )
    public_uploads_at_once: int = Field(
        default=4, ge=1, description="Anonymous uploads (opt-out and access photos) the server "
        "receives and holds at once, each up to max_upload_bytes in memory twice over; more get "
        "503 before their body is read.")
    source_retention_days: int = Field(
        default=3 * 365,
        description="Default retention of a new source's images, in days: three years, the "
        "Illinois biometric-privacy (BIPA) limit. Each source can set its own.",
    )
    probe_retention_days: int = Field(
        default=30, description="Days a kept probe photo (cases with keep_probes) is kept.")
    candidate_retention_days: int = Field(
        default=2 * 365, description="Days a search and its candidate list are kept.")
    audit_retention_days: int = Field(
        default=6 * 365, description="Days an audit record is kept (the chain is anchored "
        "past the records removed).")
    audit_key: SecretStr = Field(
        default=SecretStr(""), description="Key (32 characters or more) with which the audit "
        "trail's head and checkpoints are signed (HMAC-SHA256); empty: the key in "
        "audit_key_file. Every process sharing a database needs the same key.")
    audit_key_file: Path | None = Field(
        default=None, description="File holding the audit key, created (mode 0600) on first "
        "use if missing; default: audit.key in home. Keep it where the database's "
        "administrators cannot write, or set audit_key.")
    retention_interval_minutes: int = Field(
        default=60, description="How often the server runs the retention job; 0 turns it off.")
    public_requests_per_day: int = Field(
        default=5, description="Opt-out and access requests one client address may make per day "
        "(those whose photo showed a face; a failed upload gives its place back).")
    public_attempts_per_hour: int = Field(
        default=20, description="Photos one client address may send to the public pages per "
        "hour, failed ones included: bounds a flood of bad uploads.")
    public_queue_length: int = Field(
        default=4, description="Public photos that may wait while one is analysed; more get "
        "503 at once, so that strangers cannot take the investigators' capacity.")
    opt_out_confirm_minutes: int = Field(
        default=30, description="Time to confirm an opt-out with a second photo; until then the "
        "person is hidden, not yet erased.")
    access_report_hours: int = Field(
        default=72, description="An access report's one-time link expires after this long.")
    smtp_host: str = Field(
        default="", description="Mail server for opt-out receipts; empty: receipts are not "
        "mailed, and the opt-out page asks for no address.")
    smtp_port: int = Field(default=25, description="Port of the mail server.")
    smtp_from: str = Field(
        default="facesearch@localhost", description="Sender of the receipts: an address the "
        "mail server accepts.")
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the connection with STARTTLS (certificate checked "
        "against the system's trust store) before anything else is sent.")
    smtp_username: str = Field(
        default="", description="Log in to the mail server as this user; empty: no log-in. "
        "Use with smtp_starttls, or the password crosses the network in clear.")
    smtp_password: SecretStr = Field(default=SecretStr(""), description="Its password.")
    mode: Literal["development", "production"] = Field(
        default="development",
        description="development or production; production refuses to serve without "
        "dpia_reference.",
    )
    dpia_reference: str = Field(
        default="", description="Reference of the data-protection impact assessment.")
    controller: str = Field(
        default="the operator of this deployment",
        description="The controller's name and contact, for the record of processing.",
    )
    deployment_organisation: str = Field(
        default="", description="The operator's own organisation: its admins create every "
        "role, auditors and data-protection officers included (they read every organisation's "
        "records); empty: only the operator (the CLI) creates those.")
    crawl_user_agent: str = Field(
        default="facesearch-crawler/1 (lawful face search; opt out: /opt-out on the operator's site)",
        description="User-Agent of the crawler: name the operator and link its opt-out page.",
    )
    crawl_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Networks (CIDR, comma-separated) the crawler may fetch from although they "
        "are loopback, private, link-local or reserved; empty: public addresses only.",
    )
    crawl_timeout_seconds: float = Field(
        default=10.0, description="Crawler deadline per request, from connecting to the last "
        "byte (each redirect hop is a request).")
    crawl_max_bytes: int = Field(default=10 * 1024 * 1024, description="Largest page or image fetched.")
    crawl_max_redirects: int = Field(default=5, description="Redirects followed per URL.")
    crawl_delay_seconds: float = Field(
        default=1.0, description="Least time between two requests to one host; a robots.txt "
        "Crawl-delay raises it.")
    crawl_concurrency: int = Field(default=8, description="Requests in flight at once, over all hosts.")
    crawl_host_concurrency: int = Field(
        default=1, description="Requests in flight at once to one host. Each still starts "
        "crawl_delay after the host's previous request started and after it ended, so more "
        "than one is in flight only where that delay is short against the host's answers.")
    host: str = Field(default="127.0.0.1", description="Address `facesearch serve` listens on.")
    port: int = Field(default=8000, description="Port `facesearch serve` listens on.")
    public_url: str = Field(
        default="", description="The address users reach the server at, such as "
        "https://faces.example.org: links (access reports) are built from it, and cookies are "
        "marked Secure when it is https; empty: the address each request came to.")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR, comma-separated) of the reverse proxies in "
        "front of the server: only from these are X-Forwarded-For (the client address, for "
        "rate limits and audit) and X-Forwarded-Proto believed; empty: from none.")
    server_workers: int = Field(
        default=1, description="Server processes (`facesearch serve`); each holds the index.")
    exact_index_max: int = Field(
        default=20_000,
        description="Galleries up to this many faces use exact search; larger ones HNSW "
        "(exact search measured 0.7 ms at 10k faces and 11 ms at 100k: bench/run.sh).",
    )
    hnsw_ef_search: int = Field(
        default=64,
        description="HNSW search breadth: higher finds more true neighbours, more slowly. Measured "
        "at 1M faces (docs/scale.md): 64 found 99.7% of true mates in 0.81 ms (p50), 48 "
        "found 99.5% in 0.63 ms.",
    )
    compressed_index_min: int = Field(
        default=10_000_000,
        description="Galleries above this many faces use the compressed IVF-PQ index (25 bytes "
        "a face in memory at 100M, re-ranked exactly) instead of HNSW (792 bytes a face, held by every "
        "server process: two of them at 10M faces take 16 GB of a 24 GiB machine).",
    )
    index_save_faces: int = Field(
        default=100_000, ge=1,
        description="Faces added since the index file was last saved that make the next write "
        "save it. Additions need not reach the file at once (after a crash they are caught up "
        "from the metadata store); erasures always do, before the writer lets go.")
    index_save_seconds: float = Field(
        default=300.0, ge=0,
        description="Seconds after which a write saves an index file with unsaved additions.")
    pq_probes: int = Field(
        default=0, description="Inverted lists the compressed index visits per query; 0 means a "
        "32nd of its lists, fewer where that would scan more than 2.75M codes (docs/scale.md).")
    pq_rerank: int = Field(
        default=1000, description="Candidates the compressed index re-ranks by exact distance "
        "(at 100M faces 200 found 96.3% of true mates at 96 probes, 1,000 found 98.6% at 112).")
    pq_lists: int = Field(
        default=0, description="Inverted lists of a new compressed index; 0 means about 4 "
        "sqrt(faces), a power of two from 64 to 4,096.")
    pq_code_bytes: int = Field(
        default=16, description="Bytes of a face's product-quantisation code in the compressed "
        "index (a divisor of 128); with its 8-byte id, what a face costs in memory.")
    vector_backend: Literal["faiss", "milvus"] = Field(
        default="faiss",
        description="faiss: the index is a file in the data directory, held in each process's "
        "memory (flat, HNSW, then compressed as the gallery grows); milvus: a collection in a "
        "Milvus server or cluster at milvus_uri, shared by every process.",
    )
    milvus_uri: str = Field(
        default="http://127.0.0.1:19530", description="Where the Milvus proxy listens (pymilvus URI).")
    milvus_token: str = Field(
        default="", description="Milvus credentials, user:password or an API key; empty when "
        "the server has authentication off.")
    milvus_collection: str = Field(
        default="facesearch_faces", description="The Milvus collection of this deployment's faces.")
    milvus_index: Literal["FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ"] = Field(
        default="HNSW",
        description="Milvus index type of a new collection (or at `reindex`): HNSW (M 32, "
        "efConstruction 200, search breadth hnsw_ef_search, as FAISS), FLAT (exact), or IVF with "
        "1024 lists a segment, 64 probed (IVF_PQ: 16-byte codes).",
    )
    excluded_jurisdictions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="ISO 3166-1 alpha-2 codes whose images are refused at ingest.",
    )

    @field_validator("search_purposes", "offence_types", "excluded_jurisdictions",
                     "crawl_allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # Environment variables give "a, b"; JSON lists are accepted too.
        if isinstance(value, str) and not value.strip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, str):
            return json.loads(value)
        return value

    @field_validator("excluded_jurisdictions")
    @classmethod
    def _upper_codes(cls, value: list[str]) -> list[str]:
        return [code.upper() for code in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # A typo must not silently trust nobody, nor "*" everybody: addresses and networks only.
        return [str(ipaddress.ip_network(item, strict=False)) for item in value]

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError("give an http:// or https:// address, such as https://faces.example.org")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _providers_in_their_organisation(self) -> Settings:
        for provider in self.oidc_providers:
            wide = sorted(DEPLOYMENT_ROLES & set(provider.roles.values()))
            if wide and provider.organisation != self.deployment_organisation.strip():
                raise ValueError(
                    f"identity provider {provider.name} maps claims to {', '.join(wide)}, who "
                    "read every organisation's records: only a provider of "
                    "FACESEARCH_DEPLOYMENT_ORGANISATION may")
        return self

    @property
    def metadata_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'metadata.sqlite3'}"

    @property
    def audit_key_path(self) -> Path:
        return self.audit_key_file or self.home / "audit.key"

    @property
    def crops_dir(self) -> Path:
        return self.home / "crops"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def probes_dir(self) -> Path:
        """Probe photos of cases that ask to keep them."""
        return self.home / "probes"

    @property
    def uploads_dir(self) -> Path:
        """Images uploaded for ingest, staged until their job has indexed them."""
        return self.home / "uploads"
