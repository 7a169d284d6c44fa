# Build, man pages and packages. `make package` writes .deb and .rpm for
# amd64 and arm64 into $(DIST)/. Everything runs through the Go toolchain
# (nfpm and go-md2man are go tools pinned in tools/go.mod, a module of
# their own, so that applications importing statesync/client do not inherit
# their dependencies).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^v//' || echo 0.0.0)
# deb and rpm want a version that starts with a digit: an untagged tree is
# 0.0.0~git<hash>.
PKGVERSION := $(shell echo "$(VERSION)" | grep -Eq '^[0-9]+\.[0-9]+' && echo "$(VERSION)" | tr - '~' || echo "0.0.0~git$(VERSION)" | tr - '.')
LDFLAGS := -s -w -X main.version=$(VERSION)
ARCHES ?= amd64 arm64
DIST ?= dist
MANS := hapaird.8 hapairctl.8 hapair.toml.5

.PHONY: all build man package test clean

all: build

build:
	go build -ldflags '$(LDFLAGS)' -o $(DIST)/hapaird ./cmd/hapaird
	go build -ldflags '$(LDFLAGS)' -o $(DIST)/hapairctl ./cmd/hapairctl

man: $(MANS:%=$(DIST)/man/%.gz)

$(DIST)/man/%.gz: docs/man/%.md
	@mkdir -p $(DIST)/man
	go tool -modfile=tools/go.mod go-md2man -in $< | gzip -9n > $@

$(DIST)/copyright: LICENSE
	@mkdir -p dist
	{ echo 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/'; echo 'Upstream-Name: hapair'; echo; echo 'Files: *'; echo 'Copyright: 2026 hapair developers'; echo 'License: MIT'; sed -e '1,/^Permission/{/^Permission/!d}' -e 's/^$$/./' -e 's/^/ /' LICENSE; } > $@

# Reproducible: the changelog's date, and nfpm's file times, are the
# commit's, not the clock's (SOURCE_DATE_EPOCH, as reproducible-builds.org
# asks), so the same commit builds the same packages.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH

$(DIST)/changelog.gz:
	@mkdir -p dist
	{ echo "hapair ($(PKGVERSION)) unstable; urgency=medium"; echo; echo "  * Release $(VERSION)."; echo; echo " -- hapair developers <hapair@example.org>  $$(date -u -R -d @$(SOURCE_DATE_EPOCH))"; } | gzip -9n > $@

package: man $(DIST)/copyright $(DIST)/changelog.gz
	sed 's#dist/#$(DIST)/#g' packaging/nfpm.yaml > $(DIST)/nfpm.yaml
	@for arch in $(ARCHES); do \
		mkdir -p $(DIST)/stage; \
		CGO_ENABLED=0 GOARCH=$$arch go build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/stage/hapaird ./cmd/hapaird || exit 1; \
		CGO_ENABLED=0 GOARCH=$$arch go build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/stage/hapairctl ./cmd/hapairctl || exit 1; \
		for fmt in deb rpm; do \
			ARCH=$$arch VERSION=$(PKGVERSION) go tool -modfile=tools/go.mod nfpm package -f $(DIST)/nfpm.yaml -p $$fmt -t $(DIST)/ || exit 1; \
		done; \
	done
	@ls -l $(DIST)/*.deb $(DIST)/*.rpm

test:
	go test -race -count=1 ./...

clean:
	rm -rf $(DIST)
