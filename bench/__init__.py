"""Benchmarks (``make bench``, ``streambatch bench``): they print numbers, no test times them."""
