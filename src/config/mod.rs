//! Typed configuration loaded from TOML, with `${ENV}` interpolation and errors that name the
//! key and the line.
