"""Policy rules: jurisdiction codes, lawful basis, exclusions and suppression."""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.errors import InvalidRequest, PolicyRefused
from facesearch.policy.rules import (
    LAWFUL_BASES,
    check_jurisdiction_allowed,
    check_lawful_basis,
    normalise_jurisdiction,
    suppressed_mask,
)


@pytest.mark.parametrize("given,expected", [
    ("FR", "FR"), ("fr", "FR"), ("De", "DE"), (" gb ", "GB"), ("us", "US"),
    ("unknown", "unknown"), ("UNKNOWN", "unknown"), (" Unknown ", "unknown"),
])
def test_jurisdiction_codes_are_normalised_to_upper_case_or_unknown(given, expected):
    assert normalise_jurisdiction(given) == expected


@pytest.mark.parametrize("code", ["XX", "USA", "uk", "EU", "", "  ", "F", "fr1", "unknown country"])
def test_codes_that_are_not_assigned_iso_alpha2_are_refused_as_invalid(code):
    with pytest.raises(InvalidRequest) as caught:
        normalise_jurisdiction(code)
    assert repr(code) in caught.value.message


@pytest.mark.parametrize("basis", [None, "", "   "])
def test_a_missing_lawful_basis_is_a_policy_refusal(basis):
    with pytest.raises(PolicyRefused) as caught:
        check_lawful_basis(basis)
    assert "lawful basis" in caught.value.message


@pytest.mark.parametrize("basis", ["because", "gdpr", "legitimate interest"])
def test_an_unknown_lawful_basis_is_an_invalid_request_listing_the_choices(basis):
    with pytest.raises(InvalidRequest) as caught:
        check_lawful_basis(basis)
    assert repr(basis) in caught.value.message
    assert all(choice in caught.value.message for choice in LAWFUL_BASES)


@pytest.mark.parametrize("basis", LAWFUL_BASES)
def test_each_article_6_basis_is_accepted(basis):
    assert check_lawful_basis(basis) == basis


def test_an_excluded_jurisdiction_is_refused_whatever_the_case_of_the_setting():
    for excluded in (["FR", "DE"], ["fr", "de"]):
        with pytest.raises(PolicyRefused) as caught:
            check_jurisdiction_allowed("DE", excluded)
        assert "DE" in caught.value.message


def test_jurisdictions_not_excluded_are_allowed():
    check_jurisdiction_allowed("GB", ["FR", "DE"])
    check_jurisdiction_allowed("unknown", ["FR"])
    check_jurisdiction_allowed("FR", [])


def test_suppressed_mask_flags_only_vectors_within_threshold_of_a_template():
    templates = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], dtype=np.float32)
    vectors = np.array([
        [0.3, 0.0, 0.0],    # 0.3 from the first template
        [0.0, 0.6, 0.0],    # 0.6 from the first
        [9.6, 0.0, 0.0],    # 0.4 from the second
        [5.0, 0.0, 0.0],    # 5 from both
        [0.0, 0.3, 0.4],    # 0.5 from the first, at a 0.55 threshold
    ], dtype=np.float32)
    mask = suppressed_mask(vectors, templates, 0.55)
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, True, False, True]
    assert suppressed_mask(vectors, templates, 0.35).tolist() == [True, False, False, False, False]


def test_suppressed_mask_accepts_a_single_vector():
    templates = np.array([[1.0, 1.0]], dtype=np.float32)
    assert suppressed_mask(np.array([1.1, 1.0]), templates, 0.5).tolist() == [True]
    assert suppressed_mask(np.array([3.0, 1.0]), templates, 0.5).tolist() == [False]


def test_suppressed_mask_without_templates_or_vectors_suppresses_nothing():
    vectors = np.zeros((3, 4), dtype=np.float32)
    mask = suppressed_mask(vectors, np.zeros((0, 4), dtype=np.float32), 0.5)
    assert mask.shape == (3,) and not mask.any()
    empty = suppressed_mask(np.zeros((0, 4), np.float32), np.ones((2, 4), np.float32), 0.5)
    assert empty.shape == (0,)


def test_per_client_limits_count_an_ipv6_client_by_its_slash_64() -> None:
    """A subscriber holds a whole /64: counting each address would give one client 2^64 of
    every per-address allowance."""
    from facesearch.service.base import client_hash, client_key

    assert client_hash("2001:db8:1:2::1") == client_hash("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert client_hash("2001:db8:1:2::1") != client_hash("2001:db8:1:3::1")
    assert client_key("2001:db8:1:2:aaaa::5") == "2001:db8:1:2::/64"
    assert client_hash("192.0.2.1") != client_hash("192.0.2.2")
    assert client_key("::ffff:192.0.2.1") == "192.0.2.1"  # an IPv4 client seen through IPv6
    assert client_key("testclient") == "testclient"
