//! Helpers shared by the black-box tests: start the binary, speak to it.
