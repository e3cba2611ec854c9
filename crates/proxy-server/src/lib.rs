//! (Written by its issue.)
