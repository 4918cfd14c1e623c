"""Generated guest passwords and reservation ids: the length asked, only the alphabet's symbols,
and no symbol favoured (bytes past the alphabet's largest multiple are dropped, not folded in)."""

from __future__ import annotations

import collections
import string

from eventsvm.api.server_request import new_reservation_id, random_symbols


def test_the_length_and_the_alphabet_are_the_ones_asked() -> None:
    for count in (1, 8, 12, 100):
        drawn = random_symbols("abc", count)
        assert len(drawn) == count and set(drawn) <= set("abc")
    reservation = new_reservation_id()
    assert reservation.startswith("r-") and len(reservation) == 10
    assert set(reservation[2:]) <= set(string.ascii_lowercase + string.digits)


def test_no_symbol_is_favoured() -> None:
    # 62 symbols: 256 % 62 = 8, so folding every byte in would draw the first eight 5/4 as often
    alphabet = string.ascii_letters + string.digits
    counts = collections.Counter(random_symbols(alphabet, 124_000))
    expected = 124_000 / len(alphabet)
    assert set(counts) == set(alphabet)
    first_eight = sum(counts[c] for c in alphabet[:8]) / 8
    rest = sum(counts[c] for c in alphabet[8:]) / (len(alphabet) - 8)
    assert abs(first_eight / rest - 1) < 0.06  # the bias would be 0.25
    assert all(0.85 * expected < n < 1.15 * expected for n in counts.values())
