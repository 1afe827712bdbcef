terraform {
  required_version = ">= 1.9"
  required_providers {
    baton = {
      source = "baton/baton"
    }
  }
}
