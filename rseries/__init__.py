"""The R-Series PSTN failover appliance: line codec, serial driver, simulator."""
