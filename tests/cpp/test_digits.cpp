// C++ unit tests of the header-only MDM-Prime digit core (csrc/include/mdfast/digits.h): base,
// encode/decode, consistency, validation codes and the walk over the consistent set, checked
// against brute force over every class and every digit pattern of small vocabularies.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "mdfast/digits.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, int64_t a = 0, int64_t b = 0) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s (%lld, %lld)\n", what, static_cast<long long>(a),
                 static_cast<long long>(b));
    ++failures;
  }
}

void check_vocabulary(int64_t C, int ell) {
  const int64_t b = mdfast::prime_base(C, ell);
  expect(mdfast::saturating_pow(b, ell, C) >= C, "b^ell >= C", C, ell);
  expect(b == 2 || mdfast::saturating_pow(b - 1, ell, C) < C, "b is the smallest base", C, ell);
  int64_t d[mdfast::kMaxDigits];
  for (int64_t c = 0; c < C; ++c) {
    mdfast::encode_digits(c, b, ell, d);
    expect(mdfast::decode_digits(d, b, ell) == c, "decode(encode(c)) == c", c, ell);
    for (int j = 0; j < ell; ++j) expect(mdfast::digit_of(c, b, ell, j) == d[j], "digit_of", c, j);
  }
  // every digit pattern over [0, b]^ell: the walk visits exactly {c < C consistent}, in order
  int64_t patterns = 1;
  for (int j = 0; j < ell; ++j) patterns *= (b + 1);
  for (int64_t p = 0; p < patterns; ++p) {
    int64_t q = p;
    for (int j = ell - 1; j >= 0; --j) {
      d[j] = q % (b + 1);
      q /= (b + 1);
    }
    std::vector<int64_t> brute;
    for (int64_t c = 0; c < C; ++c) {
      if (mdfast::is_consistent(c, d, b, ell, C)) brute.push_back(c);
    }
    const int code = mdfast::validate_token(d, b, ell, C, false, -1);
    expect((code == mdfast::kEmptyConsistentSet) == brute.empty(), "empty set code", p, code);
    mdfast::DigitWalk walk(d, b, ell, C);
    std::vector<int64_t> walked;
    for (bool ok = walk.begin(); ok; ok = walk.next()) {
      walked.push_back(walk.c);
      for (int k = 0; k < walk.masked; ++k) {
        expect(mdfast::digit_of(walk.c, b, ell, walk.pos[k]) == walk.val[k], "walk digit", p, k);
      }
    }
    expect(walked == brute, "odometer walk == brute force", p, static_cast<int64_t>(walked.size()));
    std::vector<int64_t> flat;
    int64_t vals[mdfast::kMaxDigits];
    for (int64_t i = 0; i < walk.span(C * b); ++i) {
      const int64_t c = walk.class_at(i, vals);
      if (c < C) flat.push_back(c);
    }
    expect(flat == brute, "flat-index walk == brute force", p, static_cast<int64_t>(flat.size()));
    if (!brute.empty()) {
      const int64_t t = brute.back();
      expect(mdfast::validate_token(d, b, ell, C, true, t) == mdfast::kDigitsOk, "target ok", p);
    }
  }
}

}  // namespace

int main() {
  expect(mdfast::prime_base(256, 2) == 16 && mdfast::prime_base(256, 3) == 7, "image bases");
  expect(mdfast::prime_base(50257, 4) == 15 && mdfast::prime_base(50257, 2) == 225, "text bases");
  check_vocabulary(256, 2);
  check_vocabulary(12, 3);
  check_vocabulary(5, 2);
  check_vocabulary(37, 4);
  check_vocabulary(10, 1);
  int64_t d[3] = {1, 9, 9};  // b = 3 for C = 12: 1 is a valid digit, 9 is out of range
  expect(mdfast::validate_token(d, 3, 3, 12, false, -1) == mdfast::kDigitOutOfRange, "range");
  d[1] = 3;
  d[2] = 0;
  expect(mdfast::validate_token(d, 3, 3, 12, true, 12) == mdfast::kTargetOutOfRange, "target >= C");
  expect(mdfast::validate_token(d, 3, 3, 12, true, 10) == mdfast::kTargetInconsistent, "target");
  if (failures) std::fprintf(stderr, "%d failures\n", failures);
  return failures ? 1 : 0;
}
