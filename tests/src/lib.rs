//! Integration tests for perfkit live in `tests/`; this library holds no code.
