# tests/bench/bench.mk: `make bench` and `make bench-long` (included by the top
# Makefile; standalone: make -f Makefile -f tests/bench/bench.mk bench).
#
#   make bench         every benchmark side by side, 3 repetitions, medians, one table
#   make bench-long    the same with the memory run at 1,000,000 commands
#   BENCH_COMMANDS=N   worker throughput commands per run (default 20000)
#   BENCH_REPS=N       repetitions (default 3)
#   BENCH_ONLY="worker projector scale latency memory realhelm"   a subset
#                      (realhelm: the worker and kcat|xargs running real helm against the
#                      emulated cluster; BENCH_REALHELM_COMMANDS, BENCH_REALHELM_CONCURRENCY)
#   BENCH_ONLY=scaleapi  helmq-api's reads at 1,000,000 releases / 20,000,000 history rows
#                      (tests/bench/scale-api; not in the default set; SCALE_SMALL=1 for a quick run)
#
# The tools are built from tests/bench/*.c into $(BUILD)/bench/; benchtool links
# helmq's own codec ($(BUILD)/libhelmq.a). Results: build/bench/*.md.

BENCH_OUT := $(BUILD)/bench
BENCH_TOOLS := $(BENCH_OUT)/noop-helm $(BENCH_OUT)/spawn-limit $(BENCH_OUT)/benchtool $(BENCH_OUT)/calib

.PHONY: bench bench-long bench-tools

bench-tools: $(BENCH_TOOLS)

# Static like the real helm (a static Go binary); falls back to dynamic.
$(BENCH_OUT)/noop-helm: tests/bench/noop-helm.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -static -o $@ $< 2>/dev/null || $(CC) -O2 -o $@ $<

$(BENCH_OUT)/spawn-limit: tests/bench/spawn-limit.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -o $@ $<

$(BENCH_OUT)/calib: tests/bench/calib.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -o $@ $<

$(BENCH_OUT)/benchtool: tests/bench/benchtool.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -o $@ $< $(LIB) $(LDLIBS) -lpthread

bench: $(PROGRAMS) bench-tools
	BENCH_TOOLS_DIR=$(abspath $(BENCH_OUT)) HELMQ_BIN=$(abspath $(BIN)) \
	    BENCH_LONG_COMMANDS=$${BENCH_LONG_COMMANDS:-100000} bash tests/bench/bench.sh

bench-long: $(PROGRAMS) bench-tools
	BENCH_TOOLS_DIR=$(abspath $(BENCH_OUT)) HELMQ_BIN=$(abspath $(BIN)) \
	    BENCH_LONG_COMMANDS=$${BENCH_LONG_COMMANDS:-1000000} bash tests/bench/bench.sh
