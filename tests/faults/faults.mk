# tests/faults/faults.mk: make targets of the fault-injection suite (tests/faults/README.md).
#
#   make test-faults             the short form: kill -9 of the worker 3 times, every other
#                                scenario once (~10 minutes; tests/faults.t, in make test, is the same as TAP)
#   make test-faults RUNS=50     the long form: 50 kill -9 runs (any RUNS > 3 is the long form)
#   make test-faults-long        the long form with RUNS (default 50)
#   make test-faults ONLY=kill9,workers   some scenarios only
#
# Included by the Makefile (-include tests/faults/faults.mk). Uses the Makefile's BIN
# (the sanitizer build with SANITIZER=...) and TEST_ENV.

FAULTS_ARGS = $(if $(RUNS),--runs $(RUNS)) $(if $(ONLY),--only $(ONLY))

.PHONY: test-faults test-faults-long
test-faults: all
	$(TEST_ENV) bash tests/faults/run.sh $(FAULTS_ARGS)

test-faults-long: all
	$(TEST_ENV) bash tests/faults/run.sh --long $(FAULTS_ARGS)
