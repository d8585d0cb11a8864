"""Language detection. Until the translation work lands, every letter is `und` (sent as written)."""

from __future__ import annotations


class UndeterminedDetector:
    def detect(self, text: str) -> str:
        return "und"
