#include <tidemap/hlc/hlc.h>

#include <algorithm>
#include <string>

#include <tidemap/base/coding.h>

namespace tidemap {
namespace {

// The printable form, position by position:
//
//   YYYY-MM-DDTHH:MM:SS.mmmZ-LLLLL
//   0123456789012345678901234567890
//             1         2         3
//
// Every field has a fixed width and the separators are the same in every
// string, so comparing two strings byte by byte compares the fields in order
// of significance: text order is timestamp order.
constexpr size_t kTextSize = 30;
constexpr char kTextTemplate[] = "0000-00-00T00:00:00.000Z-00000";
static_assert(sizeof(kTextTemplate) - 1 == kTextSize);

constexpr uint64_t kMsPerSecond = 1000;
constexpr uint64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr uint64_t kMsPerHour = 60 * kMsPerMinute;
constexpr uint64_t kMsPerDay = 24 * kMsPerHour;

// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar: the
// algorithms below count from a March 1st so that a leap day ends its year.
constexpr uint64_t kEpochShiftDays = 719468;
constexpr uint64_t kDaysPerEra = 146097;  // 400 years

struct CivilDate {
  uint64_t year;
  uint64_t month;  // 1..12
  uint64_t day;    // 1..31
};

// Howard Hinnant's civil_from_days, restricted to days >= 0 (the Unix epoch
// or later), which lets it run in unsigned arithmetic. No locale, no time zone.
CivilDate CivilFromDays(uint64_t days) {
  const uint64_t z = days + kEpochShiftDays;
  const uint64_t era = z / kDaysPerEra;
  const uint64_t doe = z - era * kDaysPerEra;                                  // [0, 146096]
  const uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
  const uint64_t mp = (5 * doy + 2) / 153;                                     // [0, 11], March = 0
  const uint64_t day = doy - (153 * mp + 2) / 5 + 1;
  const uint64_t month = mp < 10 ? mp + 3 : mp - 9;
  const uint64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  return CivilDate{year, month, day};
}

// The inverse. REQUIRES: year >= 1970 and a valid month and day.
uint64_t DaysFromCivil(uint64_t year, uint64_t month, uint64_t day) {
  const uint64_t y = year - (month <= 2 ? 1 : 0);
  const uint64_t era = y / 400;
  const uint64_t yoe = y - era * 400;
  const uint64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const uint64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * kDaysPerEra + doe - kEpochShiftDays;
}

bool IsLeapYear(uint64_t year) { return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0); }

uint64_t DaysInMonth(uint64_t year, uint64_t month) {
  constexpr uint64_t kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeapYear(year) ? 29 : kDays[month - 1];
}

// Writes the `width` low decimal digits of `v` ending just before `end`.
void PutDigits(char* end, int width, uint64_t v) {
  for (int i = 0; i < width; ++i) {
    *--end = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// Reads `width` decimal digits at `p`. REQUIRES: they are all '0'..'9'.
uint64_t ReadDigits(const char* p, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v = v * 10 + static_cast<uint64_t>(p[i] - '0');
  return v;
}

Status ParseError(std::string_view text, std::string_view reason) {
  std::string msg = "invalid HLC timestamp \"";
  msg += Printable(text);
  msg += "\": ";
  msg += reason;
  return Status::InvalidArgument(std::move(msg));
}

// An offset in seconds for messages, with one decimal rounded up, so that an
// offset just over a limit never prints as equal to it ("60.1", not "60.0").
std::string OffsetSecondsText(uint64_t ms) {
  const uint64_t tenths = ms / 100 + (ms % 100 != 0 ? 1 : 0);
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10);
}

// A configured limit in seconds, exact: "60", "1.5", "0.25".
std::string LimitSecondsText(uint64_t ms) {
  std::string out = std::to_string(ms / kMsPerSecond);
  uint64_t frac = ms % kMsPerSecond;
  if (frac == 0) return out;
  out += '.';
  for (uint64_t unit = 100; frac != 0; unit /= 10) {
    out += static_cast<char>('0' + frac / unit);
    frac %= unit;
  }
  return out;
}

}  // namespace

std::string Timestamp::ToString() const {
  const uint64_t physical = physical_ms();
  const uint64_t ms_of_day = physical % kMsPerDay;
  const CivilDate date = CivilFromDays(physical / kMsPerDay);

  std::string out(kTextTemplate, kTextSize);
  char* p = out.data();
  PutDigits(p + 4, 4, date.year);
  PutDigits(p + 7, 2, date.month);
  PutDigits(p + 10, 2, date.day);
  PutDigits(p + 13, 2, ms_of_day / kMsPerHour);
  PutDigits(p + 16, 2, ms_of_day / kMsPerMinute % 60);
  PutDigits(p + 19, 2, ms_of_day / kMsPerSecond % 60);
  PutDigits(p + 23, 3, ms_of_day % kMsPerSecond);
  PutDigits(p + 30, 5, logical());
  // Past year 9999 (refused from peers, but a broken local clock or bad bytes
  // may still get one logged) the year keeps all its digits: the text is then
  // longer than kTextSize and Parse() refuses it, which beats a wrong date.
  if (date.year > 9999) out.insert(0, std::to_string(date.year / 10000));
  return out;
}

Result<Timestamp> Timestamp::Parse(std::string_view text) {
  if (text.size() != kTextSize) {
    return ParseError(text, "expected " + std::to_string(kTextSize) + " characters, got " +
                                std::to_string(text.size()));
  }
  for (size_t i = 0; i < kTextSize; ++i) {
    const bool want_digit = kTextTemplate[i] == '0';
    const char c = text[i];
    if (want_digit ? (c < '0' || c > '9') : c != kTextTemplate[i]) {
      std::string reason = "expected ";
      if (want_digit) {
        reason += "a digit";
      } else {
        reason += '\'';
        reason += kTextTemplate[i];
        reason += '\'';
      }
      reason += " at position ";
      reason += std::to_string(i);
      return ParseError(text, reason);
    }
  }
  const char* p = text.data();
  const uint64_t year = ReadDigits(p, 4);
  const uint64_t month = ReadDigits(p + 5, 2);
  const uint64_t day = ReadDigits(p + 8, 2);
  const uint64_t hour = ReadDigits(p + 11, 2);
  const uint64_t minute = ReadDigits(p + 14, 2);
  const uint64_t second = ReadDigits(p + 17, 2);
  const uint64_t milli = ReadDigits(p + 20, 3);
  const uint64_t logical = ReadDigits(p + 25, 5);

  if (year < 1970) return ParseError(text, "year before 1970");
  if (month < 1 || month > 12) return ParseError(text, "month out of range");
  if (day < 1 || day > DaysInMonth(year, month)) return ParseError(text, "day out of range");
  if (hour > 23) return ParseError(text, "hour out of range");
  if (minute > 59) return ParseError(text, "minute out of range");
  // UTC milliseconds since the epoch have no leap seconds: ":60" never prints.
  if (second > 59) return ParseError(text, "second out of range");
  if (logical > kLogicalMax) return ParseError(text, "logical counter above 65535");

  const uint64_t physical = DaysFromCivil(year, month, day) * kMsPerDay + hour * kMsPerHour +
                            minute * kMsPerMinute + second * kMsPerSecond + milli;
  const Timestamp t = FromParts(physical, logical);
  // The checks above should leave exactly one text per timestamp; this makes
  // sure of it, because two spellings of one timestamp would break text order.
  if (physical > kPrintablePhysicalMax || t.ToString() != text) {
    return ParseError(text, "does not round-trip");
  }
  return t;
}

std::string Version::ToString() const { return hlc.ToString() + "/" + NodeIdToString(origin); }

std::string NodeIdToString(uint64_t node_id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kHex[node_id & 0xf];
    node_id >>= 4;
  }
  return out;
}

Hlc::Hlc(Clock* clock, HlcOptions options, Timestamp floor)
    : clock_(clock), options_(options), last_(floor) {
  TIDEMAP_CHECK(clock_ != nullptr);
}

Timestamp Hlc::Now() {
  // Read the clock outside the lock: it is the slow part, and a reading that
  // is stale by the time we hold the lock is harmless, because the result is
  // at least last_ + 1 anyway.
  const uint64_t pt = std::min(clock_->NowMillis(), Timestamp::kPhysicalMax);
  MutexLock lock(&mu_);
  // An all-ones last_ would wrap to zero. Nothing we issue or accept gets near
  // it (Update refuses anything past year 9999), so only a bug can reach it.
  TIDEMAP_CHECK_MSG(last_.raw != ~uint64_t{0}, "HLC exhausted");
  // The HLC rule is: (pt, 0) when pt is ahead of last_'s physical part, else
  // last_ with the logical counter incremented, rolling into the next
  // millisecond on overflow. Because the logical counter occupies the low
  // bits, "increment, rolling over" is just raw + 1, and (pt, 0) is at least
  // last_ + 1 exactly when pt is ahead, so the rule is a max.
  last_ = std::max(Timestamp::FromParts(pt, 0), Timestamp{last_.raw + 1});
  return last_;
}

Status Hlc::CheckOffset(Timestamp remote, std::string_view peer) const {
  const uint64_t remote_ms = remote.physical_ms();
  if (remote_ms > Timestamp::kPrintablePhysicalMax) {
    return Status::Refused("peer " + std::string(peer) + ": timestamp " +
                           std::to_string(remote_ms) + " ms is past year 9999");
  }
  const uint64_t local_ms = clock_->NowMillis();
  // Compare by subtraction: local_ms + limit could overflow for a large limit.
  if (remote_ms > local_ms && remote_ms - local_ms > options_.max_clock_offset_ms) {
    return Status::Refused("peer " + std::string(peer) + ": clock " +
                           OffsetSecondsText(remote_ms - local_ms) + " s ahead, limit " +
                           LimitSecondsText(options_.max_clock_offset_ms) + " s");
  }
  return Status::Ok();
}

Status Hlc::Update(Timestamp remote, std::string_view peer) {
  TIDEMAP_RETURN_IF_ERROR(CheckOffset(remote, peer));
  // Merging is enough: Now() returns at least last_ + 1, so every later local
  // timestamp is greater than `remote`. Issuing a timestamp for the receipt
  // itself, as the textbook rule does, would only burn a logical tick.
  MutexLock lock(&mu_);
  last_ = std::max(last_, remote);
  return Status::Ok();
}

Timestamp Hlc::Last() const {
  MutexLock lock(&mu_);
  return last_;
}

void Hlc::RaiseFloor(Timestamp t) {
  MutexLock lock(&mu_);
  last_ = std::max(last_, t);
}

}  // namespace tidemap
