#include "bench/report.h"

namespace tidemap {

namespace {
std::vector<std::string>& Lines() {
  static std::vector<std::string> lines;
  return lines;
}
}  // namespace

void AddReportLine(std::string line) { Lines().push_back(std::move(line)); }
const std::vector<std::string>& ReportLines() { return Lines(); }

}  // namespace tidemap
