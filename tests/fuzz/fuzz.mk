# tests/fuzz/fuzz.mk: libFuzzer targets for the codec and command validation
# (tests/fuzz/README.md). A fragment of the top Makefile, which includes it
# (`-include tests/fuzz/fuzz.mk`); it uses that Makefile's PKG_CFLAGS, LDLIBS
# and its rules for the generated $(BUILD)/schemas_gen.c and sql_gen.c.
# `make -f Makefile -f tests/fuzz/fuzz.mk TARGET` works too, included or not.
#
#   make fuzz-build    build/fuzz/<target> for every target (clang, libFuzzer, ASan+UBSan)
#   make fuzz          each target for FUZZ_SECONDS (600) or FUZZ_RUNS executions, on the corpus
#   make fuzz-smoke    each target for FUZZ_SMOKE_SECONDS (20), on the corpus (CI)
#   make fuzz-seeds    regenerate the Avro seed corpora from the JSON ones with bin/helmq encode
#   make fuzz-clean    remove build/fuzz
#
#   FUZZ_TARGETS=codec_datum make fuzz     one target only
#   FUZZ_FLAGS='-jobs=2 -workers=2'        extra libFuzzer flags
#   FUZZ_STRICT=1                          fail on the FINDINGS.md bugs the targets tolerate
ifndef HELMQ_FUZZ_MK
HELMQ_FUZZ_MK := 1
# This fragment must not become the default goal wherever it is included.
helmq_fuzz_saved_goal := $(.DEFAULT_GOAL)

FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_GEN := $(or $(BUILD),build)
FUZZ_TARGETS ?= codec_decode codec_datum command_json validate_values http_request api_body cli_json
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?=
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_FLAGS ?=
FUZZ_OPT ?= -O1 -g
FUZZ_SANITIZE := address,undefined
FUZZ_CFLAGS_ALL = $(FUZZ_OPT) -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer \
                  -fsanitize=fuzzer-no-link,$(FUZZ_SANITIZE) -fno-sanitize-recover=all \
                  -Wall -Wextra -Wno-unused-parameter -MMD -MP -Iworker/lib -Iworker/api -Iproducer-cli -I$(FUZZ_GEN) $(PKG_CFLAGS)
FUZZ_LDLIBS = $(or $(LDLIBS),$(shell pkg-config --libs avro-c jansson libcrypto) -lhttp_parser -lm)

# The project's shared code, as an archive: a target links only the objects
# it uses, so libraries the fuzzed code never calls need not be linked. The
# API's and the CLI's command building (api_body, cli_json) come with it;
# codec_cmd.c holds the CLI's cli_read_all.
FUZZ_LIB_SRC = $(sort $(wildcard worker/lib/*.c)) $(FUZZ_GEN)/schemas_gen.c $(FUZZ_GEN)/sql_gen.c \
               worker/api/api_command.c producer-cli/send_doc.c producer-cli/codec_cmd.c
FUZZ_LIB_OBJ = $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
FUZZ_LIB := $(FUZZ_DIR)/libhelmq-fuzz.a
FUZZ_COMMON_OBJ := $(FUZZ_DIR)/obj/tests/fuzz/fuzz_common.o
FUZZ_BINS = $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)

# Dictionaries: Avro records for the codec targets, HTTP for http_request,
# JSON for the others (a shell snippet: the recipes loop over the targets in
# the shell).
FUZZ_DICT_SH = case $$t in codec_*) dict=tests/fuzz/avro.dict ;; http_*) dict=tests/fuzz/http.dict ;; \
               *) dict=tests/fuzz/json.dict ;; esac

# Sanitizer settings of every run. Leaks are reported, with no suppression:
# LeakSanitizer must scan unaligned words (use_unaligned=1) because avro-c's
# generic values store pointers at 4-byte offsets; without it every decoded
# event looks like a leak. allocator_may_return_null: an allocation beyond
# what ASan can serve fails as malloc would in production.
FUZZ_ENV = ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:abort_on_error=0 \
           LSAN_OPTIONS=use_unaligned=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
FUZZ_TIME = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS) $(if $(filter command line environment,$(origin FUZZ_SECONDS)),-max_total_time=$(FUZZ_SECONDS)),-max_total_time=$(FUZZ_SECONDS))

.PHONY: fuzz-build fuzz fuzz-smoke fuzz-seeds fuzz-clean

fuzz-build: $(FUZZ_BINS)

$(FUZZ_LIB_OBJ): $(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS_ALL) -c -o $@ $<

$(FUZZ_DIR)/obj/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS_ALL) -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(FUZZ_DIR)/%: $(FUZZ_DIR)/obj/tests/fuzz/%.o $(FUZZ_COMMON_OBJ) $(FUZZ_LIB)
	$(FUZZ_CC) -fsanitize=fuzzer,$(FUZZ_SANITIZE) -o $@ $^ $(FUZZ_LDLIBS)

# Long runs. New inputs go to build/fuzz/corpus/<target> (the committed
# tests/fuzz/corpus/<target> is read, never written); crashes to
# build/fuzz/artifacts/.
fuzz: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@set -e; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_DIR)/corpus/$$t; $(FUZZ_DICT_SH); \
	    echo "== fuzz $$t"; \
	    $(FUZZ_ENV) $(FUZZ_DIR)/$$t $(FUZZ_TIME) -dict=$$dict -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_FLAGS) \
	        $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t; \
	done

# Short runs for CI: a fresh work corpus each time.
fuzz-smoke: fuzz-build
	@mkdir -p $(FUZZ_DIR)/artifacts
	@set -e; for t in $(FUZZ_TARGETS); do \
	    rm -rf $(FUZZ_DIR)/smoke/$$t && mkdir -p $(FUZZ_DIR)/smoke/$$t; $(FUZZ_DICT_SH); \
	    echo "== fuzz-smoke $$t ($(FUZZ_SMOKE_SECONDS) s)"; \
	    $(FUZZ_ENV) $(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SMOKE_SECONDS) -dict=$$dict \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- $(FUZZ_FLAGS) \
	        $(FUZZ_DIR)/smoke/$$t tests/fuzz/corpus/$$t; \
	done

# The Avro seeds are the JSON seeds encoded by helmq itself: every
# command_json seed helmq encode accepts (as given, or completed by helmq
# <verb> --dry-run for the seed's own install document), and every event.
# codec_datum's seeds are the same records without their header, behind the
# byte that selects the schema (0 command, 1 event). The v1 fixture is copied.
fuzz-seeds: $(BIN)/helmq
	@set -e; c=tests/fuzz/corpus; mkdir -p $$c/codec_decode $$c/codec_datum; \
	rm -f $$c/codec_decode/seed-* $$c/codec_datum/seed-*; \
	for f in $$c/command_json/*.json; do \
	    n=$$(basename $$f .json); type=command; \
	    case $$n in event*) type=event ;; esac; \
	    out=$$c/codec_decode/seed-$$n.avro; \
	    if ! $(BIN)/helmq encode --type $$type <$$f >$$out 2>/dev/null; then \
	        op=$$(sed -n 's/.*"operation" *: *"\([a-z]*\)".*/\1/p' $$f); \
	        if ! $(BIN)/helmq $${op:-install} -f $$f --dry-run 2>/dev/null | \
	             $(BIN)/helmq encode >$$out 2>/dev/null; then rm -f $$out; continue; fi; \
	    fi; \
	    sel=0; [ $$type = event ] && sel=1; \
	    { printf "\\$$(printf %o $$sel)"; tail -c +11 $$out; } >$$c/codec_datum/seed-$$n.bin; \
	done; \
	cp tests/fixtures/command-v1-install.avro $$c/codec_decode/seed-command-v1-install.avro; \
	{ printf '\002'; tail -c +11 tests/fixtures/command-v1-install.avro; } >$$c/codec_datum/seed-command-v1-install.bin; \
	ls $$c/codec_decode | wc -l | sed 's/^/codec_decode seeds: /'; ls $$c/codec_datum | wc -l | sed 's/^/codec_datum seeds: /'

fuzz-clean:
	rm -rf $(FUZZ_DIR)

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_TARGETS:%=$(FUZZ_DIR)/obj/tests/fuzz/%.d) $(FUZZ_COMMON_OBJ:.o=.d)

.DEFAULT_GOAL := $(helmq_fuzz_saved_goal)
endif
