//! Prerequisite checks for a MySQL/MariaDB source, used by `tidemark check`.
