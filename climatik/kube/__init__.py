"""The controller runtime: API client, informers, work queue, controller runner, leader election, status
writes with conflict retry, Events, and the process shell. The only package that imports `kubernetes`."""
