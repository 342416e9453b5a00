"""Fixtures of the recommender tests: small untrained models (see helpers.py)."""

import pytest

from tests.zoo.recommender.helpers import make_recommender


@pytest.fixture(scope="module")
def sasrec():
    return make_recommender("sasrec")


@pytest.fixture(scope="module")
def bst():
    return make_recommender("bst")
