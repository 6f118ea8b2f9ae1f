# Two entry points (see README.md); everything real lives in scripts/ and meson.
.PHONY: demo test build clean format

build:
	scripts/setup
	@[ -f build/build.ninja ] || meson setup build -Dwerror=true
	ninja -C build

# The main job: boot a real sandbox and run a command in it.
demo: build
	scripts/demo

test:
	scripts/test-all

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz build*.log
