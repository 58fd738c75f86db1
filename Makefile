# helmq: build, test and run. A plain Makefile: pkg-config for the libraries,
# -MMD for header dependencies, everything built under build/ and bin/.
#
#   make            build bin/helmq, bin/helmq-broker, bin/helmq-worker, ...
#   make deps       install the Debian packages the build, tests and run need
#   make test       deps + build + the whole test suite (TAP, run by prove)
#   make run        deps + build + the service on embedded defaults
#   SANITIZER=address,undefined make test    the same under ASan+UBSan
#   CI=true         warnings become errors

CC ?= cc
PKGS := rdkafka libuv avro-c libpq jansson libcrypto
BUILD ?= build
BIN ?= bin
ifneq ($(SANITIZER),)
BUILD := build/san
BIN := build/san/bin
endif

WARN := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wundef \
        -Wshadow -Wpointer-arith -Wno-unused-parameter
# gcc's -Wformat-truncation flags snprintf calls whose truncation is checked;
# clang has no such warning and would reject the option.
ifeq ($(shell $(CC) --version 2>/dev/null | grep -c clang),0)
WARN += -Wno-format-truncation
endif
ifeq ($(CI),true)
WARN += -Werror
endif
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP -Iworker/lib -I$(BUILD)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifneq ($(SANITIZER),)
CFLAGS += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZER)
endif
LDLIBS = $(PKG_LIBS) -lhttp_parser -lm

SCHEMAS := schemas/helm-release-command.avsc schemas/helm-release-event.avsc \
           $(sort $(wildcard schemas/versions/*.avsc))
LIB_SRC := $(sort $(wildcard worker/lib/*.c))
MIGRATIONS := $(sort $(wildcard sql/[0-9]*.sql))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/schemas_gen.o $(BUILD)/sql_gen.o
LIB := $(BUILD)/libhelmq.a

WORKER_SRC := $(sort $(wildcard worker/*.c))
WORKER_OBJ := $(WORKER_SRC:%.c=$(BUILD)/%.o)
CLI_SRC := $(sort $(wildcard producer-cli/*.c))
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
BROKER_SRC := $(sort $(wildcard worker/broker/*.c))
API_SRC := $(sort $(wildcard worker/api/*.c))
API_OBJ := $(API_SRC:%.c=$(BUILD)/%.o)
PROJECTOR_SRC := $(sort $(wildcard worker/projector/*.c))
PROJECTOR_OBJ := $(PROJECTOR_SRC:%.c=$(BUILD)/%.o)
BROKER_OBJ := $(BROKER_SRC:%.c=$(BUILD)/%.o)
# The worker's and projector's modules, less their main(), are archives the
# unit tests link against: a test pulls in only the modules it exercises and
# supplies fakes for the rest. Each tests/unit/test_*.c is one TAP binary;
# tests/unit/support/*.c are shared helpers linked into every one of them.
WORKER_LIB := $(BUILD)/libhelmq-worker.a
PROJECTOR_LIB := $(BUILD)/libhelmq-projector.a
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_SUPPORT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(sort $(wildcard tests/unit/support/*.c)))

PROGRAMS := $(BIN)/helmq $(BIN)/helmq-broker $(BIN)/helmq-worker $(BIN)/helmq-projector $(BIN)/helmq-api

.PHONY: all deps test unit check run demo readme clean format format-check FORCE
all: $(PROGRAMS) $(UNIT_BIN)

deps:
	@bash tests/lib/deps.sh

FORCE:

# The schemas are the only definition of the records: they are compiled into
# every program as strings, never copied by hand.
$(BUILD)/schemas_gen.c: $(SCHEMAS) tests/lib/embed.sh
	@mkdir -p $(dir $@)
	bash tests/lib/embed.sh schema_sources $(SCHEMAS) > $@.tmp && mv $@.tmp $@
# The list of files itself is a prerequisite (rewritten only when it changes):
# a migration removed or renamed rebuilds the embedded list too.
$(BUILD)/sql-files: FORCE
	@mkdir -p $(dir $@)
	@echo '$(MIGRATIONS)' | cmp -s - $@ || echo '$(MIGRATIONS)' > $@
$(BUILD)/sql_gen.c: $(MIGRATIONS) $(BUILD)/sql-files tests/lib/embed.sh
	@mkdir -p $(dir $@)
	bash tests/lib/embed.sh sql_migrations $(MIGRATIONS) > $@.tmp && mv $@.tmp $@

# helmq-api's OpenAPI document, served at /openapi.json: built in the same way.
$(BUILD)/openapi_gen.c: docs/openapi.json tests/lib/embed.sh
	@mkdir -p $(dir $@)
	bash tests/lib/embed.sh openapi_sources docs/openapi.json > $@.tmp && mv $@.tmp $@

# The status page (worker/api/static/: HTML, CSS, JS, no build step), served at
# / and /static/: embedded the same way.
STATIC := worker/api/static/status.html worker/api/static/status.css worker/api/static/status.js
$(BUILD)/static_gen.c: $(STATIC) tests/lib/embed.sh
	@mkdir -p $(dir $@)
	bash tests/lib/embed.sh static_sources $(STATIC) > $@.tmp && mv $@.tmp $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BIN)/helmq: $(CLI_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(WORKER_LIB): $(filter-out $(BUILD)/worker/main.o,$(WORKER_OBJ))
	rm -f $@ && ar rcs $@ $^

$(PROJECTOR_LIB): $(filter-out $(BUILD)/worker/projector/main.o,$(PROJECTOR_OBJ))
	rm -f $@ && ar rcs $@ $^

$(BIN)/helmq-worker: $(WORKER_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/helmq-projector: $(PROJECTOR_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/helmq-api: $(API_OBJ) $(BUILD)/openapi_gen.o $(BUILD)/static_gen.o $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/helmq-broker: $(BROKER_OBJ) $(LIB)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

UNIT_CFLAGS = -Iworker -Iworker/projector -Itests/unit
$(BUILD)/tests/unit/support/%.o: tests/unit/support/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(UNIT_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<
# (filter-out: -MMD makes the headers prerequisites of the binary too.)
$(BUILD)/tests/test_%: tests/unit/test_%.c $(UNIT_SUPPORT_OBJ) $(WORKER_LIB) $(PROJECTOR_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(UNIT_CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(LDLIBS)

unit: all
	prove -e '' $(UNIT_BIN)

# The whole suite: C unit tests and the shell/TAP integration tests.
# Tests find the programs through HELMQ_BIN (bin/, or the sanitizer build).
TEST_ENV = HELMQ_BIN=$(abspath $(BIN)) HELMQ_BUILD=$(abspath $(BUILD)) HELMQ_SANITIZER=$(SANITIZER) \
           ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
           LSAN_OPTIONS=use_unaligned=1:suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
test: deps
	$(MAKE) all
	$(TEST_ENV) prove -e '' $(UNIT_BIN)
	$(TEST_ENV) prove $(PROVE_FLAGS) tests/*.t

run: deps
	$(MAKE) all
	bash tests/lib/run.sh serve

demo: deps
	$(MAKE) all
	bash tests/lib/run.sh demo

# The README's configuration tables come from the programs' option tables.
readme: all
	bash tests/lib/readme-options.sh

FORMAT_SRC = $(wildcard worker/*.[ch] worker/lib/*.[ch] worker/broker/*.[ch] worker/projector/*.[ch] \
                        worker/api/*.[ch] producer-cli/*.[ch] tests/unit/*.[ch] tests/unit/support/*.[ch])
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	clang-format --dry-run --Werror $(FORMAT_SRC)

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)

# Fuzzing (libFuzzer, clang), the fault-injection suite and the benchmarks.
-include tests/fuzz/fuzz.mk
-include tests/faults/faults.mk
-include tests/bench/bench.mk
