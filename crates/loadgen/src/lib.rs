//! (Written by the performance issue.)
