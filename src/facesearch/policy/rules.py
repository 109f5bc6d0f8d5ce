"""Lawful basis, jurisdiction and suppression rules."""

from __future__ import annotations

import numpy as np

from facesearch.errors import InvalidRequest, PolicyRefused

# GDPR Art. 6(1) bases. Facial templates are also special-category data (Art. 9): the
# operator records which Art. 9(2) condition applies in the source's description.
LAWFUL_BASES = (
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
)

# Each basis as a person reads it, with the article it rests on.
LAWFUL_BASIS_WORDS = {
    "consent": "consent (GDPR Art. 6(1)(a))",
    "contract": "a contract (GDPR Art. 6(1)(b))",
    "legal_obligation": "a legal obligation (GDPR Art. 6(1)(c))",
    "vital_interests": "vital interests (GDPR Art. 6(1)(d))",
    "public_task": "a task in the public interest (GDPR Art. 6(1)(e))",
    "legitimate_interests": "legitimate interests (GDPR Art. 6(1)(f))",
}

UNKNOWN_JURISDICTION = "unknown"

# ISO 3166-1 alpha-2, officially assigned codes.
ISO_3166_ALPHA2 = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())


def normalise_jurisdiction(code: str) -> str:
    """An ISO 3166-1 alpha-2 code in upper case, or 'unknown'; anything else is refused."""
    cleaned = code.strip()
    if cleaned.lower() == UNKNOWN_JURISDICTION:
        return UNKNOWN_JURISDICTION
    if cleaned.upper() in ISO_3166_ALPHA2:
        return cleaned.upper()
    raise InvalidRequest(f"{code!r} is not an ISO 3166-1 alpha-2 code nor 'unknown'")


def check_lawful_basis(basis: str | None) -> str:
    if not basis or not basis.strip():
        raise PolicyRefused("a source needs a lawful basis before anything is collected from it")
    if basis not in LAWFUL_BASES:
        raise InvalidRequest(f"unknown lawful basis {basis!r}; choose one of {', '.join(LAWFUL_BASES)}")
    return basis


def lawful_basis_in_words(basis: str) -> str:
    """A lawful basis code in plain words, e.g. "legitimate interests (GDPR Art. 6(1)(f))";
    a code this version does not know is shown as it is rather than hidden."""
    return LAWFUL_BASIS_WORDS.get(basis, basis.replace("_", " "))


def check_jurisdiction_allowed(jurisdiction: str, excluded: list[str]) -> None:
    if jurisdiction in {normalise_jurisdiction(code) for code in excluded}:
        raise PolicyRefused(f"jurisdiction {jurisdiction} is excluded by configuration")


def suppressed_mask(vectors: np.ndarray, templates: np.ndarray, threshold: float) -> np.ndarray:
    """True for each vector within threshold of any suppressed person's template."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if len(templates) == 0 or len(vectors) == 0:
        return np.zeros(len(vectors), dtype=bool)
    squared = (
        (vectors**2).sum(1)[:, None] - 2 * vectors @ templates.T + (templates**2).sum(1)[None, :]
    )
    return (squared < threshold**2).any(axis=1)
