/*
 * iommusim's native reference walker for the nested benchmark: an x86-64 first-stage table
 * nested over a VT-d second-stage table, walked over the very same table bytes the TypeScript
 * model built. Written for this project; its only job is to give bench/main.ts a C baseline.
 *
 * Input file: u64 base, u64 s1_root (GPA), u64 s2_root (HPA), u64 levels1, u64 levels2,
 * u64 mem_bytes, u64 n, then mem_bytes of memory image starting at `base`, then n u64 IOVAs.
 * Output (stdout): {"walk_ns": best round, "walk_ns_mean": N, "reads_per_walk": R, "checksum": "0x..."}
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const uint8_t *image;
static uint64_t image_base, image_len;
static uint64_t reads;

static inline uint64_t load(uint64_t pa)
{
	reads++;
	if (pa < image_base || pa - image_base + 8 > image_len)
		return 0;
	return *(const uint64_t *)(image + (pa - image_base));
}

#define ADDR_MASK 0x000ffffffffff000ull

/* VT-d second stage: present when R or W, PS (bit 7) marks 2M/1G leaves. Returns ~0 on fault. */
static inline uint64_t walk_s2(uint64_t root, int levels, uint64_t gpa)
{
	uint64_t table = root;
	for (int level = levels - 1; level >= 0; level--) {
		unsigned shift = 12 + 9 * level;
		uint64_t e = load(table + ((gpa >> shift) & 511) * 8);
		if (!(e & 3))
			return ~0ull;
		if (level == 0 || (level <= 2 && (e & 0x80))) {
			uint64_t mask = (1ull << shift) - 1;
			return (e & ADDR_MASK & ~mask) | (gpa & mask);
		}
		table = e & ADDR_MASK;
	}
	return ~0ull;
}

/* x86-64 first stage whose table addresses are GPAs translated by the second stage. */
static inline uint64_t walk_nested(uint64_t s1_root, int l1, uint64_t s2_root, int l2, uint64_t iova)
{
	uint64_t table = s1_root;
	for (int level = l1 - 1; level >= 0; level--) {
		unsigned shift = 12 + 9 * level;
		uint64_t hpa = walk_s2(s2_root, l2, table);
		if (hpa == ~0ull)
			return ~0ull;
		uint64_t e = load(hpa + ((iova >> shift) & 511) * 8);
		if (!(e & 1))
			return ~0ull;
		if (level == 0 || (level <= 2 && (e & 0x80))) {
			uint64_t mask = (1ull << shift) - 1;
			return walk_s2(s2_root, l2, (e & ADDR_MASK & ~mask) | (iova & mask));
		}
		table = e & ADDR_MASK;
	}
	return ~0ull;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s IMAGE ROUNDS\n", argv[0]);
		return 2;
	}
	FILE *f = fopen(argv[1], "rb");
	if (!f)
		return 1;
	uint64_t hdr[7];
	if (fread(hdr, 8, 7, f) != 7)
		return 1;
	image_base = hdr[0];
	image_len = hdr[5];
	uint64_t n = hdr[6];
	uint8_t *buf = malloc(image_len);
	uint64_t *iovas = malloc(n * 8);
	if (!buf || !iovas || fread(buf, 1, image_len, f) != image_len || fread(iovas, 8, n, f) != n)
		return 1;
	fclose(f);
	image = buf;
	long rounds = atol(argv[2]);
	uint64_t sum = 0;
	for (uint64_t i = 0; i < n; i++) /* warm up */
		sum += walk_nested(hdr[1], (int)hdr[3], hdr[2], (int)hdr[4], iovas[i]) & 0xffffffffu;
	reads = 0;
	sum = 0;
	/* Time each round; report the best round (what the TypeScript side reports too) and the mean. */
	double best = 1e30, total = 0;
	for (long r = 0; r < rounds; r++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (uint64_t i = 0; i < n; i++)
			sum += walk_nested(hdr[1], (int)hdr[3], hdr[2], (int)hdr[4], iovas[i]) & 0xffffffffu;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
		total += ns;
		if (ns < best)
			best = ns;
	}
	double walks = (double)rounds * (double)n;
	printf("{\"walk_ns\": %.2f, \"walk_ns_mean\": %.2f, \"reads_per_walk\": %.2f, \"checksum\": \"0x%llx\"}\n",
	       best / (double)n, total / walks, (double)reads / walks, (unsigned long long)sum);
	return 0;
}
