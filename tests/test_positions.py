"""Tests of course_utils/positions.py: the input checks of every position hook (lesson 02)."""

import pytest
import torch

from course_utils.positions import check_activation, hook_name, normalize_positions


@pytest.mark.parametrize(
    "positions, index",
    [
        (3, [3]),
        (-1, [-1]),
        ([2, 4], [2, 4]),
        ((0, 1), [0, 1]),
        (range(1, 4), [1, 2, 3]),
        (torch.tensor([5, 0]), [5, 0]),
        (slice(1, None), slice(1, None)),
    ],
)
def test_positions_become_an_index(positions, index):
    assert normalize_positions(positions) == index


def test_the_index_is_a_copy_of_the_callers_list():
    positions = [1, 2]
    index = normalize_positions(positions)
    positions.append(3)
    assert index == [1, 2]


@pytest.mark.parametrize(
    "positions, error, message",
    [
        ([], ValueError, "empty"),
        ("2", TypeError, "hold ints"),
        ([1.0], TypeError, "hold ints"),
        (True, TypeError, "bool"),
        (torch.tensor([0.5]), TypeError, "1-D integer"),
        (torch.tensor([[1, 2]]), TypeError, "1-D integer"),
        (None, TypeError, "NoneType"),
    ],
)
def test_bad_positions_are_refused_with_a_reason(positions, error, message):
    with pytest.raises(error, match=message):
        normalize_positions(positions)


def test_check_activation_explains_what_does_not_fit():
    named = type("Hook", (), {"name": "blocks.0.attn.hook_pattern"})()
    assert hook_name(named) == "blocks.0.attn.hook_pattern" and hook_name(None) == "this hook point"
    check_activation(torch.zeros(2, 7, 4), [0, -7, 6], None)  # fits: nothing raised
    with pytest.raises(IndexError, match="pos runs from 0 to 6"):
        check_activation(torch.zeros(2, 7, 4), [7], None)
    with pytest.raises(ValueError, match="query_pos"):
        check_activation(torch.zeros(1, 9, 7, 7), [1], named)
    with pytest.raises(ValueError, match="batch dimension"):
        check_activation(torch.zeros(5), [1], None)
    with pytest.raises(TypeError, match="tensor activation"):
        check_activation([[0.0]], [0], None)
