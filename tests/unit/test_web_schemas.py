"""The API's value types on their own: what they take whatever model they sit in (a body
model is strict, a query model is not; `Epoch` must refuse a boolean in both)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from appliance.web.schemas import MAX_EPOCH, Epoch, TokenIn


class Lax(BaseModel):  # as a query model is: not strict
    model_config = ConfigDict(extra="forbid")
    at: Epoch | None = None


@pytest.mark.parametrize("value", [True, False])
def test_epoch_refuses_booleans_naming_the_field(value: bool) -> None:
    with pytest.raises(ValidationError) as e:
        TypeAdapter(Epoch).validate_python(value)  # it gave 1.0 and 0.0
    assert "not a boolean" in str(e.value)
    with pytest.raises(ValidationError) as e:
        Lax.model_validate({"at": value})
    err = e.value.errors()[0]
    assert err["loc"] == ("at",) and "not a boolean" in err["msg"]
    with pytest.raises(ValidationError) as e:
        TokenIn.model_validate({"name": "ci", "expires_at": value})
    assert e.value.errors()[0]["loc"] == ("expires_at",)


@pytest.mark.parametrize("value", [0, 1, 1.5, MAX_EPOCH, "1700000000"])
def test_epoch_takes_numbers(value: Any) -> None:
    assert Lax.model_validate({"at": value}).at == float(value)


@pytest.mark.parametrize("value", [-1, MAX_EPOCH + 1, float("nan"), float("inf"), "x"])
def test_epoch_refuses_what_is_no_time(value: Any) -> None:
    with pytest.raises(ValidationError):
        Lax.model_validate({"at": value})
