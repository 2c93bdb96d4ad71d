"""Money is integer rupiah everywhere; this is how a person reads it."""


def rupiah_format(amount: int) -> str:
    """99000 -> 'Rp99.000': Indonesian thousands separator, no space after Rp (PUEBI)."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp{abs(int(amount)):,}".replace(",", ".")
