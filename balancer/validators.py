"""Field validators whose messages say the reason; the form or YAML error names the field."""
import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.deconstruct import deconstructible

# Same rule as proxyworker.config._name: names end up in Redis keys and server ids ("pool/server").
name_validator = RegexValidator(r"^[^\s:/]{1,100}$", "must be 1-100 characters without spaces, ':' or '/'")
cookie_name_validator = RegexValidator(
    r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]*$", "is not a valid cookie name (letters, digits and !#$%%&'*+-.^_`|~ only)"
)


@deconstructible
class Between:
    """Inclusive range with a message that states it (migrations need a class, not a closure)."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def __call__(self, value):
        if value is not None and not self.low <= value <= self.high:
            raise ValidationError(f"must be between {self.low} and {self.high}, not {value:g}", code="range")

    def __eq__(self, other):
        return isinstance(other, Between) and (self.low, self.high) == (other.low, other.high)


def positive(value):
    if value is not None and value <= 0:
        raise ValidationError(f"must be greater than 0, not {value:g}", code="positive")


def http_path(value):
    if not value.startswith("/"):
        raise ValidationError("must start with /", code="path")


_CODE = re.compile(r"^\d{3}$")


def parse_status_codes(text: str) -> tuple[int, ...]:
    """'200, 204' -> (200, 204); raises ValidationError naming the bad item."""
    codes = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if not _CODE.match(item) or not 100 <= int(item) <= 599:
            raise ValidationError(f"{item!r} is not an HTTP status code (100-599)", code="status")
        codes.append(int(item))
    return tuple(codes)


def status_codes(value):
    parse_status_codes(value)
