//! The `tidemark` command line: parses arguments, loads config, calls the library.

fn main() {}
