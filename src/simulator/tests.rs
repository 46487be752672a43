//! Scenario tests and the shape check against the recorded fixtures.
