"""Asterisk: AMI client on panoramisk, typed events, span alarms, test calls, ARI, simulator."""
