//! bridge-core
