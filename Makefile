.PHONY: install start sim test typecheck bench replay

install:
	npm ci

start:
	npm start

sim:
	npm start -- --sim

test:
	npm test

typecheck:
	npm run typecheck

bench:
	npm run bench

# make replay INSTANCE=../shared/data/mdrp/8o100t100s1p100
replay:
	npm run replay -- --mdrp $(INSTANCE)
