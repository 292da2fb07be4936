//! Mock-API tests.
