terraform {
  # Validation rules that read other variables need 1.9.
  required_version = ">= 1.9"
}
