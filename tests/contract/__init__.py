"""Behaviour suites written once and run against every implementation of an interface."""
