"""Settings: one object, read from FACESEARCH_* environment variables, passed explicitly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    max_image_pixels: int = Field(
        default=50_000_000,
        description="Images with more pixels are refused (decompression-bomb guard).",
    )
    max_image_bytes: int = Field(default=50 * 1024 * 1024, description="Larger files are refused.")
    detect_max_side: int = Field(
        default=1600,
        description="Detection runs on a copy downscaled to this longest side; alignment "
        "uses the full-resolution image.",
    )
    detector: str = Field(
        default="hog",
        description="Face detector: hog (fast, frontal), cnn (dlib MMOD, slower, more poses) "
        "or hog+cnn (CNN only where HOG finds nothing).",
    )
    upsample: int = Field(
        default=1,
        description="Detector upsampling passes for small images (each doubles the image to "
        "find faces half as small), applied only while the image stays within detect_max_side.",
    )
    min_face_size: int = Field(
        default=40, description="Faces narrower than this (pixels, original image) are ignored."
    )
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
    match_threshold: float = Field(
        default=0.45,
        description="Candidates farther than this descriptor distance are not returned. At "
        "0.45, 99.5% of same-person LFW pairs lie within it and 2.6% of different-person "
        "pairs do (`facesearch eval lfw`); each candidate's score says how strong it is.",
    )
    suppress_threshold: float = Field(
        default=0.40,
        description="Distance to a suppressed person's template under which a face is deleted, "
        "withheld at ingest and hidden from search. Stricter than match_threshold: 97% of "
        "same-person LFW pairs, 0.26% of different-person pairs.",
    )
    top_k: int = Field(default=10, description="Candidates returned per probe face.")
    exact_index_max: int = Field(
        default=20_000,
        description="Galleries up to this many faces use exact search; larger ones HNSW "
        "(exact search measured 0.7 ms at 10k faces and 11 ms at 100k: bench/run.sh).",
    )
    hnsw_ef_search: int = Field(
        default=160,
        description="HNSW search breadth: higher finds more true neighbours, more slowly. At "
        "1M faces 64 gave recall@10 0.973 in 0.6 ms and 128 gave 0.989 in 1.1 ms "
        "(bench/run.sh); 160 is chosen for recall@10 of 0.99.",
    )
    excluded_jurisdictions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="ISO 3166-1 alpha-2 codes whose images are refused at ingest.",
    )

    @field_validator("excluded_jurisdictions", mode="before")
    @classmethod
    def _split_codes(cls, value: object) -> object:
        # Environment variables give "FR,DE"; JSON lists are accepted too.
        if isinstance(value, str) and not value.strip().startswith("["):
            return [code.strip().upper() for code in value.split(",") if code.strip()]
        if isinstance(value, str):
            return json.loads(value)
        return value

    @property
    def metadata_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'metadata.sqlite3'}"

    @property
    def crops_dir(self) -> Path:
        return self.home / "crops"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"
